use super::*;
use std::net::Ipv4Addr;

/// A benchmark server on a free loopback port, for the rest of the test process.
fn server() -> SocketAddrV4 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || serve(listener));
    SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)
}

/// A server that reads one connection's bytes until EOF and answers `answer`.
fn fake_sink(answer: &'static str) -> SocketAddrV4 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        io::copy(&mut stream, &mut io::sink()).unwrap();
        stream.write_all(answer.as_bytes()).unwrap();
    });
    SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)
}

/// Sends `line` as a connection's first line and returns the answer line.
fn answer_to(addr: SocketAddrV4, line: &str) -> String {
    ask(addr, line, Duration::from_secs(10)).unwrap()
}

const SHORT: Duration = Duration::from_millis(150);

#[test]
fn sink_to_a_server_counts_every_byte_sent() {
    let sent = sink_to(server(), SHORT).unwrap();
    assert!(sent.bytes >= SINK_BUFFER as u64, "{sent:?}");
    assert_eq!(sent.bytes % SINK_BUFFER as u64, 0);
    assert!(sent.elapsed >= SHORT, "{sent:?}");
    assert!(sent.bits_per_second() > 0.0);
}

#[test]
fn a_sink_that_counts_other_bytes_is_an_error() {
    let err = sink_to(fake_sink("received 1\n"), SHORT).unwrap_err();
    assert!(
        matches!(err, NetbenchError::Lost { received: 1, .. }),
        "{err}"
    );
    let err = sink_to(fake_sink("got it\n"), SHORT).unwrap_err();
    assert!(matches!(err, NetbenchError::MalformedAnswer(_)), "{err}");
}

#[test]
fn rtt_to_a_server_gives_one_sorted_sample_per_round_trip() {
    let rtt = rtt_to(server(), 50).unwrap();
    assert_eq!(rtt.samples().len(), 50);
    assert!(rtt.samples().windows(2).all(|w| w[0] <= w[1]));
    assert!(rtt.p50() <= rtt.p99());
    assert_eq!(rtt.summary().count, 50);
}

#[test]
fn a_send_command_makes_one_server_sink_into_another() {
    let (asked, target) = (server(), server());
    let line = Command::Send {
        to: target,
        millis: 150,
    }
    .to_string();
    let sent = Sent::parse_answer(&answer_to(asked, &line)).unwrap();
    assert!(sent.bytes >= SINK_BUFFER as u64, "{sent:?}");
    assert!(sent.elapsed >= SHORT, "{sent:?}");
}

#[test]
fn an_rtt_command_makes_one_server_measure_another() {
    let (asked, target) = (server(), server());
    let line = format!("rtt {target} 20\n");
    let rtt = Rtt::parse_answer(&answer_to(asked, &line)).unwrap();
    assert_eq!(rtt.count, 20);
    assert!(rtt.p50_us <= rtt.p99_us, "{rtt:?}");
}

#[test]
fn a_send_to_nobody_is_answered_with_the_connect_error() {
    let nobody = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = nobody.local_addr().unwrap().port();
    drop(nobody);
    let answer = answer_to(server(), &format!("send 127.0.0.1:{port} 100"));
    assert!(answer.starts_with("error connecting to "), "{answer}");
    let err = Sent::parse_answer(&answer).unwrap_err();
    assert!(matches!(err, NetbenchError::Peer(_)), "{err}");
}

#[test]
fn an_unknown_command_is_answered_with_an_error() {
    let answer = answer_to(server(), "dance 10");
    assert_eq!(answer, r#"error unknown command "dance 10""#);
}

#[test]
fn malformed_addresses_and_numbers_are_answered_with_errors() {
    let addr = server();
    for line in [
        "send 10.0.0:80 100",
        "send host:80 100",
        "send 127.0.0.1:0 100",
        "rtt 127.0.0.1 10",
        "send 127.0.0.1:80 600001",
        "send 127.0.0.1:80 0",
        "rtt 127.0.0.1:80 1000001",
        "rtt 127.0.0.1:80 -5",
        "send 127.0.0.1:80",
    ] {
        let answer = answer_to(addr, line);
        assert!(answer.starts_with("error "), "{line}: {answer}");
    }
    assert_eq!(
        answer_to(addr, "send host:80 100"),
        r#"error bad address "host:80" (expected <ipv4>:<port>)"#
    );
}

#[test]
fn a_command_line_longer_than_256_bytes_is_answered_with_an_error() {
    let mut stream = TcpStream::connect(server()).unwrap();
    let mut line = vec![b'x'; MAX_LINE + 10];
    line.push(b'\n');
    stream.write_all(&line).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let answer = read_line(&mut stream, "the answer").unwrap();
    assert_eq!(answer, "error a line longer than 256 bytes");
}

#[test]
fn commands_round_trip_through_their_lines() {
    let to = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 5201);
    for command in [
        Command::Sink,
        Command::Echo,
        Command::Send { to, millis: 2000 },
        Command::Rtt { to, count: 1000 },
    ] {
        assert_eq!(command.to_string().parse::<Command>().unwrap(), command);
    }
    assert_eq!(
        Command::Send { to, millis: 2000 }.to_string(),
        "send 10.0.0.2:5201 2000"
    );
    assert_eq!(
        Command::Send { to, millis: 2000 }.answer_timeout(),
        Duration::from_secs(32)
    );
    assert_eq!(
        Command::Rtt { to, count: 1000 }.answer_timeout(),
        Duration::from_secs(31)
    );
}

#[test]
fn sent_answers_round_trip_through_their_lines() {
    let sent = Sent {
        bytes: 1_310_720,
        elapsed: Duration::from_micros(1_000_123),
    };
    let line = sent.to_string();
    assert_eq!(line, "sent bytes=1310720 micros=1000123");
    assert_eq!(Sent::parse_answer(&format!("{line}\n")).unwrap(), sent);
}

#[test]
fn rtt_answers_round_trip_through_their_lines() {
    let summary = RttSummary {
        count: 1000,
        p50_us: 41,
        p99_us: 97,
        mean_us: 45,
    };
    let line = summary.to_string();
    assert_eq!(line, "rtt count=1000 p50_us=41 p99_us=97 mean_us=45");
    assert_eq!(Rtt::parse_answer(&line).unwrap(), summary);
}

#[test]
fn error_answers_parse_as_the_peers_reason() {
    let err = Sent::parse_answer("error connecting to 10.0.0.2:80: refused").unwrap_err();
    assert!(
        matches!(&err, NetbenchError::Peer(r) if r == "connecting to 10.0.0.2:80: refused"),
        "{err}"
    );
    assert!(matches!(
        Rtt::parse_answer("error"),
        Err(NetbenchError::Peer(_))
    ));
}

#[test]
fn malformed_answers_are_errors() {
    for line in [
        "",
        "sent",
        "sent bytes=1",
        "sent bytes=1 micros=x",
        "sent micros=1 bytes=1",
        "sent bytes=1 micros=2 extra=3",
        "sent bytes=-1 micros=2",
        "errors galore",
        "rtt count=1 p50_us=1 p99_us=1",
    ] {
        let err = Sent::parse_answer(line).unwrap_err();
        assert!(matches!(err, NetbenchError::MalformedAnswer(_)), "{line}");
    }
    assert!(Rtt::parse_answer("sent bytes=1 micros=2").is_err());
}

#[test]
fn percentiles_are_nearest_rank_in_microseconds() {
    let samples = (1..=100).rev().map(Duration::from_micros).collect();
    let rtt = Rtt::from_samples(samples);
    assert_eq!(rtt.samples()[0], Duration::from_micros(1));
    assert_eq!((rtt.p50(), rtt.p99(), rtt.mean()), (50, 99, 50));
    let empty = Rtt::from_samples(Vec::new());
    assert_eq!((empty.p50(), empty.p99(), empty.mean()), (0, 0, 0));
}
