//! The TLS gate's ClientHello parser, on fuzzer bytes as they would arrive
//! on the wire: it must never panic, a hello it reads must give a JA4 that
//! reads back, and it must read the same hello whatever follows it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tower_no_response::tls::{ClientHello, Ja4};

fuzz_target!(|data: &[u8]| {
    let Ok(Some(hello)) = ClientHello::parse(data) else {
        return;
    };
    let ja4 = hello.ja4();
    assert_eq!(ja4.as_str().parse::<Ja4>(), Ok(ja4));
    let mut longer = data.to_vec();
    longer.extend_from_slice(b"\x16\x03\x01\x00\x01\x01");
    assert_eq!(ClientHello::parse(&longer), Ok(Some(hello)));
});
