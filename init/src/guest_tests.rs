use super::*;

#[test]
fn any_route_to_the_service_is_recognised() {
    let head =
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n";
    let on_link = "eth0\tFEA9FEA9\t00000000\t0005\t0\t0\t0\tFFFFFFFF\t0\t0\t0\n";
    let via_gw = "eth0\tFEA9FEA9\t01001FAC\t0007\t0\t0\t0\tFFFFFFFF\t0\t0\t0\n";
    let default = "eth0\t00000000\t01004D0A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n";
    let local = "eth0\t00004D0A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
    assert!(metadata_route(&format!("{head}{on_link}")));
    assert!(metadata_route(&format!("{head}{via_gw}")));
    assert!(metadata_route(&format!("{head}{local}{default}")));
    assert!(
        !metadata_route(&format!("{head}{local}")),
        "only 10.77.0.0/24"
    );
    assert!(!metadata_route(head));
}

fn v4(a: u8, b: u8, c: u8, d: u8, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::new(a, b, c, d), port)
}

#[test]
fn serve_and_connect_lines_parse_in_order() {
    let text = "serve 8080\r\n  connect 10.0.0.5:22   # the neighbour\nserve 65535 #\nconnect 127.0.0.1:1\ndisks\ndisks churn\ndisks now\n";
    let (probes, bad) = parse_user_data(text);
    assert_eq!(
        probes,
        [
            Probe::Serve(8080),
            Probe::Connect(v4(10, 0, 0, 5, 22)),
            Probe::Serve(65535),
            Probe::Connect(v4(127, 0, 0, 1, 1)),
            Probe::Disks { churn: false },
            Probe::Disks { churn: true },
        ]
    );
    assert_eq!(bad.len(), 1, "`disks now`: {bad:?}");
    assert_eq!(bad[0].error, LineError::Usage("disks [churn]"));
}

#[test]
fn other_words_comments_and_blank_lines_are_ignored() {
    let text = "#!/bin/sh\necho hello\n\n# serve 80\nServe 80\nserver 80\nconnecting 1.2.3.4:5\n";
    assert_eq!(parse_user_data(text), (vec![], vec![]));
}

#[test]
fn bad_ports_are_reported_with_their_line() {
    let text = "serve 0\nserve 65536\nserve http\nserve +80\nconnect 10.0.0.1:0\nconnect 10.0.0.1:99999\nconnect 10.0.0.1:";
    let (probes, bad) = parse_user_data(text);
    assert_eq!(probes, []);
    let got: Vec<(usize, LineError)> = bad.into_iter().map(|b| (b.number, b.error)).collect();
    let port = |p: &str| LineError::Port(p.to_string());
    assert_eq!(
        got,
        [
            (1, port("0")),
            (2, port("65536")),
            (3, port("http")),
            (4, port("+80")),
            (5, port("0")),
            (6, port("99999")),
            (7, port("")),
        ]
    );
}

#[test]
fn bad_addresses_are_reported_with_their_line() {
    let text = "connect 10.0.0:80\nconnect host:80\nconnect [::1]:80\nconnect 0.0.0.0:80\nconnect 224.0.0.1:80\nconnect 255.255.255.255:80\nconnect 010.0.0.1:80";
    let (probes, bad) = parse_user_data(text);
    assert_eq!(probes, []);
    let got: Vec<LineError> = bad.into_iter().map(|b| b.error).collect();
    let addr = |a: &str| LineError::Address(a.to_string());
    let want = [
        addr("10.0.0"),
        addr("host"),
        addr("[::1]"),
        addr("0.0.0.0"),
        addr("224.0.0.1"),
        addr("255.255.255.255"),
        addr("010.0.0.1"),
    ];
    assert_eq!(got, want);
}

#[test]
fn lines_of_the_wrong_shape_are_reported() {
    let (probes, bad) =
        parse_user_data("serve\nserve 80 81\nconnect\nconnect 10.0.0.1\nconnect a b");
    assert_eq!(probes, []);
    let got: Vec<LineError> = bad.into_iter().map(|b| b.error).collect();
    let serve = LineError::Usage("serve <port>");
    let connect = LineError::Usage("connect <ipv4>:<port>");
    assert_eq!(
        got,
        [
            serve.clone(),
            serve,
            connect.clone(),
            connect.clone(),
            connect
        ]
    );
}

#[test]
fn netbench_lines_parse_and_bad_ones_are_reported() {
    let text = "netbench 5201\nnetbench\nnetbench 0\nnetbench 1 2 # two ports\n";
    let (probes, bad) = parse_user_data(text);
    assert_eq!(probes, [Probe::Netbench(5201)]);
    let got: Vec<(usize, LineError)> = bad.into_iter().map(|b| (b.number, b.error)).collect();
    let usage = LineError::Usage("netbench <port>");
    assert_eq!(
        got,
        [
            (2, usage.clone()),
            (3, LineError::Port("0".into())),
            (4, usage)
        ]
    );
}

#[test]
fn a_netbench_server_sinks_what_it_is_sent() {
    let port = start_netbench(v4(127, 0, 0, 1, 0)).unwrap();
    let sent = netbench::sink_to(v4(127, 0, 0, 1, port), Duration::from_millis(100)).unwrap();
    assert!(sent.bytes > 0, "{sent:?}");
}

#[test]
fn a_bad_line_warning_is_one_line_naming_the_line() {
    let (_, bad) = parse_user_data("echo\n  serve 0x50\t# http\r\n");
    let text = bad[0].to_string();
    assert_eq!(
        text,
        "user data line 2 \"serve 0x50\\t# http\": bad port \"0x50\" (expected 1-65535)"
    );
    let (_, bad) = parse_user_data("connect 1.2.3.4\u{1b}:80");
    assert!(!bad[0].to_string().contains(['\n', '\u{1b}']));
}

#[test]
fn an_answer_is_logged_as_one_printable_line() {
    assert_eq!(one_line(b"i-test\r\n"), "i-test");
    assert_eq!(one_line(b"a\tb\x1b[0m"), "a\\tb\\u{1b}[0m");
    assert_eq!(one_line(b"\xffx\n"), "\u{fffd}x");
}

#[test]
fn a_probe_of_a_served_port_answers_the_instance_id() {
    let port = serve(v4(127, 0, 0, 1, 0), "i-test").unwrap();
    assert_ne!(port, 0);
    let outcome = probe_once(v4(127, 0, 0, 1, port));
    assert_eq!(outcome.to_string(), "answered i-test");
    // The listener keeps serving: a second connection is answered too.
    assert_eq!(probe_once(v4(127, 0, 0, 1, port)), outcome);
}

#[test]
fn a_probe_of_a_closed_port_is_refused() {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let outcome = probe_once(v4(127, 0, 0, 1, port));
    assert_eq!(outcome.to_string(), "unreachable (refused)");
}

#[test]
fn a_peer_that_closes_without_a_line_is_reported_closed() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = thread::spawn(move || drop(listener.accept().unwrap()));
    let outcome = probe_once(v4(127, 0, 0, 1, port));
    server.join().unwrap();
    assert_eq!(outcome, Outcome::Unreachable("closed".into()));
}

/// A metadata service on loopback: answers each request from `replies` in turn and returns the
/// request heads it saw.
fn fake_imds(replies: Vec<(u16, &'static str)>) -> (SocketAddr, thread::JoinHandle<Vec<String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = thread::spawn(move || {
        let mut heads = Vec::new();
        for (status, body) in replies {
            let (mut s, _) = listener.accept().unwrap();
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut head = String::new();
            while r.read_line(&mut head).unwrap() > 0 && !head.ends_with("\r\n\r\n") {}
            write!(
                s,
                "HTTP/1.1 {status} X\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .unwrap();
            heads.push(head);
        }
        heads
    });
    (addr, server)
}

#[test]
fn the_id_and_user_data_are_fetched_with_one_token() {
    let replies = vec![(200, "tok1"), (200, "i-test\n"), (200, "serve 80\n")];
    let (addr, server) = fake_imds(replies);
    let imds = Imds::open(addr).unwrap();
    assert_eq!(imds.instance_id().unwrap(), "i-test");
    assert_eq!(imds.user_data().unwrap().unwrap(), b"serve 80\n");
    let heads = server.join().unwrap();
    assert!(heads[0].starts_with("PUT /latest/api/token "));
    assert!(heads[1].starts_with("GET /latest/meta-data/instance-id "));
    assert!(heads[2].starts_with("GET /latest/user-data "));
    for head in &heads[1..] {
        assert!(
            head.contains("X-aws-ec2-metadata-token: tok1\r\n"),
            "{head}"
        );
    }
}

#[test]
fn no_user_data_is_a_404_and_other_failures_are_errors() {
    let replies = vec![(200, "tok1"), (404, "<html>\n</html>\n"), (403, "no")];
    let (addr, server) = fake_imds(replies);
    let imds = Imds::open(addr).unwrap();
    assert!(imds.user_data().unwrap().is_none());
    let e = imds.user_data().unwrap_err();
    assert_eq!(
        e.to_string(),
        "user-data: the metadata service answered 403"
    );
    server.join().unwrap();
}
