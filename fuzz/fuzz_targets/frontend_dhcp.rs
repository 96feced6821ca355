//! Bytes in as a DHCP request; the server answers or returns an error, never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mallee_frontend::pxe::boot::BootFiles;
use mallee_frontend::pxe::dhcp::DhcpServer;
use mallee_frontend::pxe::leases::SqliteLeaseStore;
use mallee_frontend::pxe::pool::{Pool, PoolConfig};
use std::net::Ipv4Addr;
use std::sync::{Mutex, OnceLock};

fn server() -> &'static Mutex<DhcpServer> {
    static SERVER: OnceLock<Mutex<DhcpServer>> = OnceLock::new();
    SERVER.get_or_init(|| {
        let cfg = PoolConfig {
            server_ip: Ipv4Addr::new(10, 9, 0, 1),
            prefix_len: 24,
            range_start: Ipv4Addr::new(10, 9, 0, 100),
            range_end: Ipv4Addr::new(10, 9, 0, 110),
            lease_secs: 3600,
            reservations: Default::default(),
        };
        let store = SqliteLeaseStore::in_memory().expect("in-memory store");
        let pool = Pool::new(cfg, Box::new(store)).expect("pool");
        Mutex::new(DhcpServer::new(
            pool,
            BootFiles {
                ipxe_script_url: "http://10.9.0.1:8069/boot.ipxe".into(),
                bios: "undionly.kpxe".into(),
                uefi: "snponly.efi".into(),
            },
        ))
    })
}

fuzz_target!(|data: &[u8]| {
    let mut s = server().lock().unwrap();
    if let Ok(Some(reply)) = s.handle_bytes(data, 1000) {
        let _ = reply.to_bytes();
    }
});
