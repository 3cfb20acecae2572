//! The few protocol-buffer encodings an ONNX file needs, written by hand: varints,
//! length-delimited fields (strings, bytes, nested messages, packed integers) and 32-bit
//! floats. A [`Message`] is built field by field in field-number order and nested by
//! value; nothing here knows ONNX.

/// An encoded message under construction.
#[derive(Clone, Debug, Default)]
pub struct Message(Vec<u8>);

impl Message {
    pub fn new() -> Message {
        Message::default()
    }

    pub fn bytes(self) -> Vec<u8> {
        self.0
    }

    fn key(&mut self, field: u32, wire: u8) {
        self.varint((u64::from(field) << 3) | u64::from(wire));
    }

    fn varint(&mut self, mut v: u64) {
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                self.0.push(byte);
                return;
            }
            self.0.push(byte | 0x80);
        }
    }

    /// An integer field (`int32`, `int64`, enums), two's complement for negatives.
    pub fn int(mut self, field: u32, v: i64) -> Message {
        self.key(field, 0);
        self.varint(v as u64);
        self
    }

    /// A `float` field.
    pub fn float(mut self, field: u32, v: f32) -> Message {
        self.key(field, 5);
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// A `bytes` field.
    pub fn raw(mut self, field: u32, bytes: &[u8]) -> Message {
        self.key(field, 2);
        self.varint(bytes.len() as u64);
        self.0.extend_from_slice(bytes);
        self
    }

    /// A `string` field.
    pub fn string(self, field: u32, s: &str) -> Message {
        self.raw(field, s.as_bytes())
    }

    /// A nested message field.
    pub fn message(self, field: u32, m: Message) -> Message {
        self.raw(field, &m.0)
    }

    /// A repeated integer field, one entry per value (valid for packed and unpacked
    /// readers alike).
    pub fn ints(mut self, field: u32, vs: &[i64]) -> Message {
        for &v in vs {
            self = self.int(field, v);
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_match_the_protobuf_wire_format() {
        // Field 1 = 150: the example of the protobuf documentation.
        assert_eq!(Message::new().int(1, 150).bytes(), vec![0x08, 0x96, 0x01]);
        assert_eq!(
            Message::new().string(2, "testing").bytes(),
            b"\x12\x07testing".to_vec()
        );
        assert_eq!(
            Message::new().int(1, -1).bytes().len(),
            11,
            "negative int64 is ten bytes"
        );
        assert_eq!(
            Message::new().float(2, 1.0).bytes(),
            vec![0x15, 0, 0, 0x80, 0x3f]
        );
        let inner = Message::new().int(1, 1);
        assert_eq!(
            Message::new().message(3, inner).bytes(),
            vec![0x1a, 2, 0x08, 1]
        );
    }
}
