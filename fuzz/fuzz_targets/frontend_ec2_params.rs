//! Fuzz target: EC2 Query parameter decoding and node protocol messages never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mallee_frontend::ec2::params::Params;

fuzz_target!(|data: &[u8]| {
    let p = Params::parse(&String::from_utf8_lossy(data));
    let _ = p.filters();
    let _ = p.list("InstanceId");
    for s in p.structs("IpPermissions") {
        let _ = s.int("FromPort");
        let _ = s.structs("IpRanges");
    }
    let _ = p.bool("DryRun");
    let _ = mallee_proto::decode::<mallee_proto::ActualState>(data);
    let _ = mallee_proto::decode::<mallee_proto::DesiredState>(data);
    let _ = mallee_proto::decode::<mallee_proto::NodeInfo>(data);
});
