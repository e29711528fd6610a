//! CRC-16/ARC, the checksum of the G85 segment.
//!
//! Reflected polynomial 0xA001, initial value 0, no final XOR (check value
//! for `123456789` is 0xBB3D).

/// `TABLES[0]` is the usual byte table; `TABLES[k]` advances a byte
/// through `k` further zero bytes, so eight bytes are folded per step
/// ("slicing-by-8") instead of one.
const fn make_tables() -> [[u16; 256]; 8] {
    let mut tables = [[0u16; 256]; 8];
    let mut byte = 0;
    while byte < 256 {
        let mut crc = byte as u16;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xA001
            } else {
                crc >> 1
            };
            bit += 1;
        }
        tables[0][byte] = crc;
        byte += 1;
    }
    let mut k = 1;
    while k < 8 {
        let mut byte = 0;
        while byte < 256 {
            let previous = tables[k - 1][byte];
            tables[k][byte] = (previous >> 8) ^ tables[0][(previous & 0xFF) as usize];
            byte += 1;
        }
        k += 1;
    }
    tables
}

static TABLES: [[u16; 256]; 8] = make_tables();

/// Running CRC-16/ARC state.
#[derive(Clone, Copy, Default)]
pub(crate) struct Crc16(u16);

impl Crc16 {
    pub(crate) fn update(&mut self, bytes: &[u8]) {
        let mut crc = self.0;
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            let x = u64::from_le_bytes(word) ^ u64::from(crc);
            let byte = |i: u32| ((x >> (8 * i)) & 0xFF) as usize;
            crc = TABLES[7][byte(0)]
                ^ TABLES[6][byte(1)]
                ^ TABLES[5][byte(2)]
                ^ TABLES[4][byte(3)]
                ^ TABLES[3][byte(4)]
                ^ TABLES[2][byte(5)]
                ^ TABLES[1][byte(6)]
                ^ TABLES[0][byte(7)];
        }
        for &byte in chunks.remainder() {
            crc = (crc >> 8) ^ TABLES[0][usize::from((crc as u8) ^ byte)];
        }
        self.0 = crc;
    }

    pub(crate) fn value(self) -> u16 {
        self.0
    }
}

pub(crate) fn crc16_arc(bytes: &[u8]) -> u16 {
    let mut crc = Crc16::default();
    crc.update(bytes);
    crc.value()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_value_of_the_catalogue() {
        assert_eq!(crc16_arc(b"123456789"), 0xBB3D);
    }

    /// The plain bit-by-bit definition, to check the sliced tables against.
    fn bitwise(bytes: &[u8]) -> u16 {
        let mut crc = 0u16;
        for &byte in bytes {
            crc ^= u16::from(byte);
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xA001
                } else {
                    crc >> 1
                };
            }
        }
        crc
    }

    #[test]
    fn sliced_equals_bitwise_for_every_length_and_split() {
        let data: Vec<u8> = (0..100u32).map(|i| (i * 37 + 11) as u8).collect();
        for len in 0..data.len() {
            assert_eq!(
                crc16_arc(&data[..len]),
                bitwise(&data[..len]),
                "length {len}"
            );
            let mut split = Crc16::default();
            split.update(&data[..len / 3]);
            split.update(&data[len / 3..len]);
            assert_eq!(split.value(), bitwise(&data[..len]), "split at {}", len / 3);
        }
    }

    #[test]
    fn incremental_equals_one_shot() {
        let mut crc = Crc16::default();
        crc.update(b"1234");
        crc.update(b"56789");
        assert_eq!(crc.value(), 0xBB3D);
        assert_eq!(crc16_arc(b""), 0);
    }
}
