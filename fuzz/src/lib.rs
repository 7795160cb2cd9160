//! Helpers shared by the fuzz targets.

/// Frames `json` (and `bin`, when given) as a GLB, as the format says:
/// a 12-byte header, a JSON chunk padded with spaces, a BIN chunk padded
/// with zeros. Lets the fuzzer work on the JSON without also having to find
/// consistent chunk lengths.
#[must_use]
pub fn glb(json: &[u8], bin: Option<&[u8]>) -> Vec<u8> {
    fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], body: &[u8], pad: u8) {
        let padded = body.len().next_multiple_of(4);
        out.extend_from_slice(&u32::try_from(padded).unwrap_or(u32::MAX).to_le_bytes());
        out.extend_from_slice(kind);
        out.extend_from_slice(body);
        out.resize(out.len() + padded - body.len(), pad);
    }
    let mut out = Vec::with_capacity(json.len() + bin.map_or(0, <[u8]>::len) + 32);
    out.extend_from_slice(b"glTF");
    out.extend_from_slice(&2u32.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    chunk(&mut out, b"JSON", json, b' ');
    if let Some(bin) = bin {
        chunk(&mut out, b"BIN\0", bin, 0);
    }
    let total = u32::try_from(out.len()).unwrap_or(u32::MAX);
    out[8..12].copy_from_slice(&total.to_le_bytes());
    out
}

/// The model a fuzz input stands for: its first byte says how the rest is
/// read. `0`: the rest is the file as it is. `1`: the rest is the JSON chunk
/// of a GLB without BIN chunk. Otherwise the rest is `JSON \0 BIN`: split at
/// the first zero byte into the JSON chunk and the BIN chunk.
#[must_use]
pub fn model_input(data: &[u8]) -> Vec<u8> {
    match data.split_first() {
        None => Vec::new(),
        Some((0, rest)) => rest.to_vec(),
        Some((1, rest)) => glb(rest, None),
        Some((_, rest)) => match rest.iter().position(|&b| b == 0) {
            Some(i) => glb(&rest[..i], Some(&rest[i + 1..])),
            None => glb(rest, None),
        },
    }
}
