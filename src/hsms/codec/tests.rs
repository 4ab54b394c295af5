use super::*;

fn bytes_of(msgs: &[Message]) -> Vec<u8> {
    let mut out = BytesMut::new();
    for m in msgs {
        encode(m, &mut out).unwrap();
    }
    out.to_vec()
}

fn decode_all(d: &mut Decoder, buf: &mut BytesMut, out: &mut Vec<Message>) {
    while let Some(m) = d.decode(buf).unwrap() {
        out.push(m);
    }
}

fn three() -> Vec<Message> {
    vec![
        Message::data(
            7,
            1,
            13,
            true,
            0xDEAD_BEEF,
            Bytes::from_static(&[0x01, 0x02, 0x41, 0x01, b'x', 0x21, 0x00]),
        ),
        linktest_req(42),
        Message::data(7, 6, 12, false, 3, Bytes::new()),
    ]
}

#[test]
fn every_control_type_round_trips() {
    let data = Message::data(1, 2, 3, true, 9, Bytes::new());
    let msgs = [
        select_req(1),
        select_rsp(&select_req(1).header, SELECT_ALREADY_ACTIVE),
        deselect_req(2),
        deselect_rsp(&deselect_req(2).header, DESELECT_BUSY),
        linktest_req(3),
        linktest_rsp(&linktest_req(3).header),
        reject_req(&data.header, RejectReason::EntityNotSelected),
        separate_req(4),
    ];
    for m in msgs {
        let raw = bytes_of(std::slice::from_ref(&m));
        let mut buf = BytesMut::from(&raw[..]);
        let got = Decoder::new(1024).decode(&mut buf).unwrap().unwrap();
        assert_eq!(got, m);
        assert!(buf.is_empty());
        assert_eq!(bytes_of(&[got]), raw);
    }
}

#[test]
fn any_header_bytes_round_trip() {
    for seed in 0u32..4096 {
        let b = seed.to_be_bytes();
        let raw = [b[3], b[2], b[3] ^ 0x80, b[2], b[1], b[0], b[3], 1, 2, b[2]];
        assert_eq!(Header::from_bytes(raw).to_bytes(), raw);
    }
}

#[test]
fn control_messages_carry_the_standard_fields() {
    let req = select_req(0x0102_0304);
    assert_eq!(
        bytes_of(&[req]),
        [0, 0, 0, 10, 0xFF, 0xFF, 0, 0, 0, 1, 1, 2, 3, 4]
    );
    let data = Message::data(5, 1, 1, true, 77, Bytes::new());
    let rej = reject_req(&data.header, RejectReason::EntityNotSelected);
    assert_eq!(
        (
            rej.header.session_id,
            rej.header.byte2(),
            rej.header.status()
        ),
        (5, 0, 4)
    );
    assert_eq!(
        (rej.header.stype, rej.header.system),
        (SType::RejectReq, 77)
    );
    let mut odd = data.header;
    odd.ptype = 3;
    let rej = reject_req(&odd, RejectReason::PTypeNotSupported);
    assert_eq!((rej.header.byte2(), rej.header.status()), (3, 2));
    let mut unknown = select_req(8).header;
    unknown.stype = SType::Unknown(8);
    let rej = reject_req(&unknown, RejectReason::STypeNotSupported);
    assert_eq!((rej.header.byte2(), rej.header.status()), (8, 1));
}

#[test]
fn primaries_and_replies() {
    let p = Message::data(1, 1, 1, true, 1, Bytes::new());
    assert!(p.is_primary() && p.expects_reply() && p.reply_function() == Some(2));
    let s = Message::data(1, 1, 2, false, 1, Bytes::new());
    assert!(
        s.is_secondary() && !s.is_primary() && !s.expects_reply() && s.reply_function().is_none()
    );
    let f255 = Message::data(1, 1, 255, true, 1, Bytes::new());
    assert_eq!(f255.reply_function(), None);
    assert!(!Message::data(1, 1, 3, false, 1, Bytes::new()).expects_reply());
    assert!(!linktest_req(1).is_primary() && !linktest_req(1).is_secondary());
}

#[test]
fn every_split_decodes_identically() {
    let msgs = three();
    let raw = bytes_of(&msgs);
    let n = raw.len();
    for i in 0..=n {
        for j in i..=n {
            let mut d = Decoder::new(1024);
            let mut buf = BytesMut::new();
            let mut out = Vec::new();
            for chunk in [&raw[..i], &raw[i..j], &raw[j..]] {
                buf.extend_from_slice(chunk);
                decode_all(&mut d, &mut buf, &mut out);
            }
            assert_eq!(out, msgs, "split at {i}, {j}");
            assert!(buf.is_empty() && !d.partial(&buf));
        }
    }
    // One byte per read: partial exactly while a message is incomplete.
    let mut d = Decoder::new(1024);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for (k, b) in raw.iter().enumerate() {
        buf.put_u8(*b);
        decode_all(&mut d, &mut buf, &mut out);
        assert_eq!(d.partial(&buf), !buf.is_empty(), "byte {k}");
    }
    assert_eq!(out, msgs);
    // All at once.
    let mut buf = BytesMut::from(&raw[..]);
    let mut out = Vec::new();
    decode_all(&mut d, &mut buf, &mut out);
    assert_eq!(out, msgs);
}

#[test]
fn too_long_is_seen_from_the_length_bytes_alone() {
    let mut d = Decoder::new(100);
    let mut buf = BytesMut::from(&[0u8, 0, 0][..]);
    assert_eq!(d.decode(&mut buf), Ok(None));
    assert!(d.partial(&buf));
    buf.put_u8(101);
    assert_eq!(
        d.decode(&mut buf),
        Err(DecodeError::TooLong { len: 101, max: 100 })
    );
    assert!(!d.partial(&buf));
    let mut buf = BytesMut::from(&[0xFFu8, 0xFF, 0xFF, 0xFF][..]);
    assert!(matches!(
        d.decode(&mut buf),
        Err(DecodeError::TooLong { .. })
    ));
    assert!(
        buf.capacity() < 1024,
        "nothing reserved for a refused length"
    );
    // Exactly at the maximum is fine.
    let mut buf = BytesMut::from(&[0u8, 0, 0, 100][..]);
    assert_eq!(d.decode(&mut buf), Ok(None));
}

#[test]
fn too_short() {
    let mut d = Decoder::new(100);
    for len in 0..10u8 {
        let mut buf = BytesMut::from(&[0u8, 0, 0, len, 1, 2, 3][..]);
        assert_eq!(
            d.decode(&mut buf),
            Err(DecodeError::TooShort { len: len.into() })
        );
    }
}

#[test]
fn encode_refuses_nothing_reasonable() {
    let m = Message::data(1, 1, 1, false, 1, Bytes::from(vec![0u8; 70_000]));
    let mut out = BytesMut::new();
    encode(&m, &mut out).unwrap();
    assert_eq!(out.len(), m.encoded_len());
    let got = Decoder::new(1 << 20).decode(&mut out).unwrap().unwrap();
    assert_eq!(got, m);
}

/// Where a reference walk over the length fields says decoding of `raw` must end.
fn expected(raw: &[u8], max: u32) -> (usize, Option<DecodeError>) {
    let mut at = 0;
    let mut count = 0;
    loop {
        let Some(p) = raw.get(at..at + 4) else {
            return (count, None);
        };
        let len = u32::from_be_bytes([p[0], p[1], p[2], p[3]]);
        if len > max {
            return (count, Some(DecodeError::TooLong { len, max }));
        }
        if len < 10 {
            return (count, Some(DecodeError::TooShort { len }));
        }
        if raw.len() < at + 4 + len as usize {
            return (count, None);
        }
        at += 4 + len as usize;
        count += 1;
    }
}

#[test]
fn garbage_never_panics_and_errors_are_reported() {
    let mut s: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    let mut errors = 0;
    for _ in 0..100_000 {
        let n = (next() % 48) as usize;
        let mut raw: Vec<u8> = (0..n).map(|_| next() as u8).collect();
        // Bias some length prefixes small so that whole frames also occur.
        if n >= 4 && next() % 2 == 0 {
            raw[0] = 0;
            raw[1] = 0;
            raw[2] = 0;
            raw[3] %= 40;
        }
        let max = 10 + (next() % 40) as u32;
        let mut d = Decoder::new(max);
        let mut buf = BytesMut::new();
        let mut count = 0;
        let mut err = None;
        // Random chunking of the same bytes.
        let mut rest = &raw[..];
        'feed: loop {
            let take = ((next() % 8) as usize).min(rest.len());
            buf.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            loop {
                match d.decode(&mut buf) {
                    Ok(Some(m)) => {
                        assert!(m.body.len() + 10 <= max as usize);
                        count += 1;
                    }
                    Ok(None) => break,
                    Err(e) => {
                        err = Some(e);
                        break 'feed;
                    }
                }
            }
            let _ = d.partial(&buf);
            if rest.is_empty() {
                break;
            }
        }
        let want = expected(&raw, max);
        assert_eq!((count, err.clone()), want, "input {raw:?} max {max}");
        errors += usize::from(err.is_some());
    }
    assert!(errors > 10_000, "the loop exercises errors ({errors})");
}
