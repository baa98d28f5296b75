//! The Internet checksum (RFC 1071), fast enough to run over every byte the forwarder
//! segments: words are summed in native order four bytes at a time into a 64-bit
//! accumulator (the compiler vectorises it) and the result is swapped to network order
//! once at the end (a one's-complement sum commutes with byte swapping).

/// One's-complement sum of `data` in network byte order, folded to 16 bits (not
/// complemented). `data` must start at an even offset of the checksummed region.
pub fn sum(data: &[u8]) -> u32 {
    let mut acc: u64 = 0;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        acc += u64::from(u32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]));
    }
    let native = u16::from_be(fold64(acc));
    let mut acc = u64::from(native);
    let rest = chunks.remainder();
    let mut pairs = rest.chunks_exact(2);
    for pair in &mut pairs {
        acc += u64::from(u16::from_be_bytes([pair[0], pair[1]]));
    }
    if let [last] = pairs.remainder() {
        acc += u64::from(*last) << 8;
    }
    u32::from(fold64(acc))
}

fn fold64(mut acc: u64) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// Adds partial sums together (one's complement), folded to 16 bits.
pub fn combine(parts: &[u32]) -> u32 {
    let acc: u64 = parts.iter().map(|&p| u64::from(p)).sum();
    u32::from(fold64(acc))
}

/// The final checksum field value for a folded sum.
pub fn finish(sum: u32) -> u16 {
    !(fold64(u64::from(sum)))
}

/// The IPv4 pseudo-header sum for a transport segment of `len` bytes.
pub fn pseudo_v4(src: &[u8], dst: &[u8], proto: u8, len: usize) -> u32 {
    let words = [
        u16::from_be_bytes([src[0], src[1]]),
        u16::from_be_bytes([src[2], src[3]]),
        u16::from_be_bytes([dst[0], dst[1]]),
        u16::from_be_bytes([dst[2], dst[3]]),
        u16::from(proto),
    ];
    let acc: u64 = words.iter().map(|&w| u64::from(w)).sum::<u64>() + len as u64;
    u32::from(fold64(acc))
}

/// Recomputes the header checksum of the IPv4 header `hdr` in place.
pub fn set_ipv4_header(hdr: &mut [u8]) {
    hdr[10] = 0;
    hdr[11] = 0;
    let value = finish(sum(hdr));
    hdr[10..12].copy_from_slice(&value.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The straightforward RFC 1071 loop, to check the fast one against.
    fn reference(data: &[u8]) -> u16 {
        let mut acc: u32 = 0;
        for pair in data.chunks(2) {
            let word = if pair.len() == 2 {
                u16::from_be_bytes([pair[0], pair[1]])
            } else {
                u16::from(pair[0]) << 8
            };
            acc += u32::from(word);
        }
        while acc >> 16 != 0 {
            acc = (acc & 0xffff) + (acc >> 16);
        }
        acc as u16
    }

    #[test]
    fn fast_sum_matches_the_reference_for_every_length_and_content() {
        let mut data = Vec::new();
        let mut x: u32 = 12345;
        for _ in 0..3000 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            data.push((x >> 16) as u8);
        }
        for len in 0..200 {
            assert_eq!(
                sum(&data[..len]) as u16,
                reference(&data[..len]),
                "len {len}"
            );
        }
        assert_eq!(sum(&data) as u16, reference(&data));
        let ones = vec![0xffu8; 1501];
        assert_eq!(sum(&ones) as u16, reference(&ones));
    }

    #[test]
    fn ipv4_header_checksum_of_a_known_header() {
        // The example header from Wikipedia's "IPv4 header checksum" article.
        let mut hdr = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        set_ipv4_header(&mut hdr);
        assert_eq!(&hdr[10..12], &[0xb8, 0x61]);
        assert_eq!(finish(sum(&hdr)), 0);
    }
}
