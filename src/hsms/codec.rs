//! The HSMS wire format (SEMI E37), sans-IO: a 4-byte big-endian length, a 10-byte header, a body.
//!
//! The [`Header`] maps its 10 bytes one to one, so a decoded data message re-encodes byte for byte:
//! zerodown forwards equipment and host data unchanged and never re-interprets a SECS-II body.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Session id carried by control messages in HSMS-SS.
pub const CONTROL_SESSION: u16 = 0xFFFF;
/// Bytes in a message header; the smallest valid length field.
pub const HEADER_LEN: usize = 10;
/// Bytes in the length prefix.
pub const LEN_PREFIX: usize = 4;

/// Select.rsp status: selected.
pub const SELECT_OK: u8 = 0;
/// Select.rsp status: the session is already selected.
pub const SELECT_ALREADY_ACTIVE: u8 = 1;
/// Deselect.rsp status: deselected.
pub const DESELECT_OK: u8 = 0;
/// Deselect.rsp status: the session was not selected.
pub const DESELECT_NOT_ESTABLISHED: u8 = 1;
/// Deselect.rsp status: transactions are still open.
pub const DESELECT_BUSY: u8 = 2;

/// The session type (header byte 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SType {
    Data,
    SelectReq,
    SelectRsp,
    DeselectReq,
    DeselectRsp,
    LinktestReq,
    LinktestRsp,
    RejectReq,
    SeparateReq,
    /// Any other value (8 is unused by the standard); answered with Reject reason 1.
    Unknown(u8),
}

impl SType {
    /// The SType a header byte stands for.
    pub fn from_byte(b: u8) -> Self {
        match b {
            0 => SType::Data,
            1 => SType::SelectReq,
            2 => SType::SelectRsp,
            3 => SType::DeselectReq,
            4 => SType::DeselectRsp,
            5 => SType::LinktestReq,
            6 => SType::LinktestRsp,
            7 => SType::RejectReq,
            9 => SType::SeparateReq,
            other => SType::Unknown(other),
        }
    }

    /// The header byte for this SType.
    pub fn to_byte(self) -> u8 {
        match self {
            SType::Data => 0,
            SType::SelectReq => 1,
            SType::SelectRsp => 2,
            SType::DeselectReq => 3,
            SType::DeselectRsp => 4,
            SType::LinktestReq => 5,
            SType::LinktestRsp => 6,
            SType::RejectReq => 7,
            SType::SeparateReq => 9,
            SType::Unknown(b) => b,
        }
    }
}

/// Why a message is rejected (Reject.req header byte 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectReason {
    STypeNotSupported = 1,
    PTypeNotSupported = 2,
    TransactionNotOpen = 3,
    EntityNotSelected = 4,
}

impl RejectReason {
    /// The reason code on the wire.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The reason a code stands for, if the standard defines it.
    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(RejectReason::STypeNotSupported),
            2 => Some(RejectReason::PTypeNotSupported),
            3 => Some(RejectReason::TransactionNotOpen),
            4 => Some(RejectReason::EntityNotSelected),
            _ => None,
        }
    }
}

/// A message header. Bytes 2 and 3 are `w_bit | stream` and `function` for data; control messages reuse
/// them (Select.rsp status and Reject.req reason in byte 3, the rejected SType in byte 2), read through
/// [`Header::byte2`] and [`Header::status`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Header {
    pub session_id: u16,
    pub w_bit: bool,
    /// 7 bits; the top bit is masked off on encode.
    pub stream: u8,
    pub function: u8,
    pub ptype: u8,
    pub stype: SType,
    pub system: u32,
}

impl Header {
    /// Parses the 10 header bytes; every byte pattern is a header.
    pub fn from_bytes(b: [u8; HEADER_LEN]) -> Self {
        let [s0, s1, b2, b3, ptype, stype, y0, y1, y2, y3] = b;
        Header {
            session_id: u16::from_be_bytes([s0, s1]),
            w_bit: b2 & 0x80 != 0,
            stream: b2 & 0x7F,
            function: b3,
            ptype,
            stype: SType::from_byte(stype),
            system: u32::from_be_bytes([y0, y1, y2, y3]),
        }
    }

    /// The 10 header bytes.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let [s0, s1] = self.session_id.to_be_bytes();
        let [y0, y1, y2, y3] = self.system.to_be_bytes();
        [
            s0,
            s1,
            self.byte2(),
            self.function,
            self.ptype,
            self.stype.to_byte(),
            y0,
            y1,
            y2,
            y3,
        ]
    }

    /// Header byte 2 (`w_bit | stream`; the rejected SType or PType on a Reject.req).
    pub fn byte2(&self) -> u8 {
        (u8::from(self.w_bit) << 7) | (self.stream & 0x7F)
    }

    /// Header byte 3 read as a control status: Select.rsp/Deselect.rsp status, Reject.req reason.
    pub fn status(&self) -> u8 {
        self.function
    }

    fn control(session_id: u16, byte2: u8, byte3: u8, stype: SType, system: u32) -> Self {
        Header {
            session_id,
            w_bit: byte2 & 0x80 != 0,
            stream: byte2 & 0x7F,
            function: byte3,
            ptype: 0,
            stype,
            system,
        }
    }
}

/// One HSMS message: its header and its (undecoded SECS-II) body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub header: Header,
    pub body: Bytes,
}

impl Message {
    /// A data message (PType 0).
    pub fn data(
        session_id: u16,
        stream: u8,
        function: u8,
        w_bit: bool,
        system: u32,
        body: Bytes,
    ) -> Self {
        Message {
            header: Header {
                session_id,
                w_bit,
                stream: stream & 0x7F,
                function,
                ptype: 0,
                stype: SType::Data,
                system,
            },
            body,
        }
    }

    /// A data message (SType 0).
    pub fn is_data(&self) -> bool {
        self.header.stype == SType::Data
    }

    /// A data message with an odd function.
    pub fn is_primary(&self) -> bool {
        self.is_data() && self.header.function % 2 == 1
    }

    /// A data message with an even function: a reply, or SxF0 (abort transaction).
    pub fn is_secondary(&self) -> bool {
        self.is_data() && self.header.function % 2 == 0
    }

    /// A primary with the W-bit: it opens a transaction that one secondary closes.
    pub fn expects_reply(&self) -> bool {
        self.is_primary() && self.header.w_bit
    }

    /// The function of this primary's reply (`None` for non-primaries and for F255, which has none).
    pub fn reply_function(&self) -> Option<u8> {
        if self.is_primary() {
            self.header.function.checked_add(1)
        } else {
            None
        }
    }

    /// Bytes this message takes on the wire, length prefix included.
    pub fn encoded_len(&self) -> usize {
        LEN_PREFIX + HEADER_LEN + self.body.len()
    }
}

fn control(header: Header) -> Message {
    Message {
        header,
        body: Bytes::new(),
    }
}

/// Select.req with our system bytes.
pub fn select_req(system: u32) -> Message {
    control(Header::control(
        CONTROL_SESSION,
        0,
        0,
        SType::SelectReq,
        system,
    ))
}

/// Select.rsp answering `req`, echoing its session id and system bytes.
pub fn select_rsp(req: &Header, status: u8) -> Message {
    control(Header::control(
        req.session_id,
        0,
        status,
        SType::SelectRsp,
        req.system,
    ))
}

/// Deselect.req with our system bytes.
pub fn deselect_req(system: u32) -> Message {
    control(Header::control(
        CONTROL_SESSION,
        0,
        0,
        SType::DeselectReq,
        system,
    ))
}

/// Deselect.rsp answering `req`.
pub fn deselect_rsp(req: &Header, status: u8) -> Message {
    control(Header::control(
        req.session_id,
        0,
        status,
        SType::DeselectRsp,
        req.system,
    ))
}

/// Linktest.req with our system bytes.
pub fn linktest_req(system: u32) -> Message {
    control(Header::control(
        CONTROL_SESSION,
        0,
        0,
        SType::LinktestReq,
        system,
    ))
}

/// Linktest.rsp answering `req`.
pub fn linktest_rsp(req: &Header) -> Message {
    control(Header::control(
        req.session_id,
        0,
        0,
        SType::LinktestRsp,
        req.system,
    ))
}

/// Reject.req for `rejected`: byte 2 names what is unsupported (its PType for reason 2, else its SType),
/// byte 3 the reason; session id and system bytes are the rejected message's so the peer can match it.
pub fn reject_req(rejected: &Header, reason: RejectReason) -> Message {
    let byte2 = match reason {
        RejectReason::PTypeNotSupported => rejected.ptype,
        _ => rejected.stype.to_byte(),
    };
    control(Header::control(
        rejected.session_id,
        byte2,
        reason.code(),
        SType::RejectReq,
        rejected.system,
    ))
}

/// Separate.req with our system bytes.
pub fn separate_req(system: u32) -> Message {
    control(Header::control(
        CONTROL_SESSION,
        0,
        0,
        SType::SeparateReq,
        system,
    ))
}

/// Why bytes could not be decoded. Either way the stream has lost framing: close the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("message length {len} exceeds the maximum {max}")]
    TooLong { len: u32, max: u32 },
    #[error("message length {len} is shorter than a header")]
    TooShort { len: u32 },
}

/// Why a message could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("a body of {body} bytes does not fit the 32-bit length field")]
    TooLong { body: usize },
}

/// Writes `msg` to `dst` with its length prefix.
pub fn encode(msg: &Message, dst: &mut BytesMut) -> Result<(), EncodeError> {
    let len = HEADER_LEN
        .checked_add(msg.body.len())
        .and_then(|l| u32::try_from(l).ok())
        .ok_or(EncodeError::TooLong {
            body: msg.body.len(),
        })?;
    dst.reserve(msg.encoded_len());
    dst.put_u32(len);
    dst.put_slice(&msg.header.to_bytes());
    dst.put_slice(&msg.body);
    Ok(())
}

/// Splits a byte stream into messages, whatever the read boundaries.
#[derive(Debug, Clone)]
pub struct Decoder {
    max_len: u32,
}

impl Decoder {
    /// A decoder refusing length fields (header + body) above `max_len`.
    pub fn new(max_len: u32) -> Self {
        Decoder { max_len }
    }

    /// The largest accepted length field.
    pub fn max_len(&self) -> u32 {
        self.max_len
    }

    /// The total frame size announced at the front of `buf`, once its 4 length bytes are there.
    fn frame_len(&self, buf: &[u8]) -> Result<Option<usize>, DecodeError> {
        let Some(prefix) = buf.get(..LEN_PREFIX) else {
            return Ok(None);
        };
        let mut len = [0u8; LEN_PREFIX];
        len.copy_from_slice(prefix);
        let len = u32::from_be_bytes(len);
        // Checked before anything is buffered, so a hostile length cannot make us allocate.
        if len > self.max_len {
            return Err(DecodeError::TooLong {
                len,
                max: self.max_len,
            });
        }
        if (len as usize) < HEADER_LEN {
            return Err(DecodeError::TooShort { len });
        }
        Ok(Some(LEN_PREFIX + len as usize))
    }

    /// Takes the next whole message off the front of `buf`; `Ok(None)` until one is complete.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Message>, DecodeError> {
        let Some(total) = self.frame_len(buf)? else {
            return Ok(None);
        };
        if buf.len() < total {
            // The length is bounded by max_len, so reserving the rest is safe and saves regrowth.
            buf.reserve(total - buf.len());
            return Ok(None);
        }
        let mut frame = buf.split_to(total);
        frame.advance(LEN_PREFIX);
        let mut header = [0u8; HEADER_LEN];
        frame.copy_to_slice(&mut header);
        Ok(Some(Message {
            header: Header::from_bytes(header),
            body: frame.freeze(),
        }))
    }

    /// Whether `buf` holds the start of a message that is not complete yet: while true the caller
    /// runs T8. False for an empty buffer, a complete message, or an invalid length (decode fails).
    pub fn partial(&self, buf: &[u8]) -> bool {
        if buf.is_empty() {
            return false;
        }
        match self.frame_len(buf) {
            Ok(None) => true,
            Ok(Some(total)) => buf.len() < total,
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests;
