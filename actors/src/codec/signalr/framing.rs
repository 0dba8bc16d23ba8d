//! Record framing of the hub protocol: JSON records end with 0x1E, MessagePack records start
//! with their length as a varint.

/// Record separator ending every JSON hub protocol record (and the handshake, in both protocols).
pub const RECORD_SEPARATOR: u8 = 0x1e;

/// SignalR's length prefix: 7 bits per byte, least significant first, high bit = more.
pub fn write_varint(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}
