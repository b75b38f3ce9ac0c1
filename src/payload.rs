//! The stored form of a committed block: the three fields the fence needs, read by a scanner that skips the transactions instead of parsing them; a lossless binary packing of the envelope's hex strings; and its split into etcd-sized, self-describing chunks. Pure: no I/O, no policy.
//!
//! Why binary: an `ExecutionPayloadEnvelope` is JSON whose bulk (transactions, hashes, the logs
//! bloom) is `0x`-hex, twice the bytes of what it encodes. Every string of the exact form
//! `"0x" + an even number of lowercase hex digits + "` is replaced by a marker byte, a length and
//! the decoded bytes; everything else is copied as it is. The marker (0x01) cannot occur in valid
//! JSON text (control characters must be escaped), so unpacking gives back the envelope byte for
//! byte, whatever its field order, whitespace or odd cases (uppercase hex stays text).

use memchr::{memchr, memchr2};

use crate::sequencer::parse_quantity;

/// Payload bytes per etcd value. etcd refuses requests over `--max-request-bytes` (1.5 MiB by
/// default); 1 MiB plus the chunk header and the Txn framing stays well below it.
pub const CHUNK_BYTES: usize = 1 << 20;

/// Marks a packed hex string in the stored form.
const TOKEN: u8 = 0x01;

/// Chunk header: magic, format, index, whether it is the last chunk.
const MAGIC: &[u8; 4] = b"opsp";
/// Stored-form version: 1 = hex-packed JSON envelope.
const FORMAT_HEXPACK: u8 = 1;
const HEADER_LEN: usize = 4 + 1 + 4 + 1;

/// Envelope bytes packed at a time: about one chunk of output, so the first chunk's write can
/// start while the rest is packed.
const SEGMENT_BYTES: usize = 2 * CHUNK_BYTES;

/// JSON nesting we follow before calling an envelope malformed (serde_json stops at 128).
const MAX_DEPTH: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    /// The envelope (or the params around it) is not what op-node sends.
    #[error("invalid payload envelope: {0}")]
    Invalid(String),
    /// What etcd holds for a block cannot be turned back into its envelope.
    #[error("stored payload is corrupt: {0}")]
    Corrupt(String),
}

fn invalid(msg: impl Into<String>) -> PayloadError {
    PayloadError::Invalid(msg.into())
}

fn corrupt(msg: impl Into<String>) -> PayloadError {
    PayloadError::Corrupt(msg.into())
}

/// The fields of an `ExecutionPayloadEnvelope` the fence needs (hashes lower-cased).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockMeta {
    pub number: u64,
    pub hash: String,
    pub parent: String,
}

fn is_hash(s: &str) -> bool {
    s.len() == 66 && s.starts_with("0x") && s[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

// === scanner ===

/// A cursor over JSON text that checks structure and skips values without building them.
/// Strings are skipped with a vectorised search for `"` and `\`, so the megabytes of
/// transaction hex cost one pass at memory speed and no allocation.
struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Cursor<'a> {
    fn ws(&mut self) {
        while let Some(c) = self.b.get(self.i) {
            if matches!(c, b' ' | b'\t' | b'\n' | b'\r') {
                self.i += 1;
            } else {
                break;
            }
        }
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> Result<(), PayloadError> {
        self.ws();
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(invalid(format!(
                "expected '{}' at byte {}",
                c as char, self.i
            )))
        }
    }

    /// A string at the cursor; returns its raw contents (escapes left as they are).
    fn string(&mut self) -> Result<&'a [u8], PayloadError> {
        self.eat(b'"')?;
        let start = self.i;
        loop {
            let rest = &self.b[self.i..];
            let Some(k) = memchr2(b'"', b'\\', rest) else {
                return Err(invalid("unterminated string"));
            };
            if rest[k] == b'"' {
                let s = &self.b[start..self.i + k];
                self.i += k + 1;
                return Ok(s);
            }
            // A backslash escapes exactly the next byte (`\uXXXX` has no quote in it).
            self.i += k + 2;
            if self.i > self.b.len() {
                return Err(invalid("unterminated string"));
            }
        }
    }

    fn value(&mut self, depth: usize) -> Result<(), PayloadError> {
        if depth > MAX_DEPTH {
            return Err(invalid("nested too deeply"));
        }
        self.ws();
        match self.peek() {
            Some(b'"') => self.string().map(|_| ()),
            Some(b'{') => {
                self.object(depth + 1, |c, _, d| c.value(d))?;
                Ok(())
            }
            Some(b'[') => {
                self.i += 1;
                self.ws();
                if self.peek() == Some(b']') {
                    self.i += 1;
                    return Ok(());
                }
                loop {
                    self.value(depth + 1)?;
                    self.ws();
                    match self.peek() {
                        Some(b',') => self.i += 1,
                        Some(b']') => {
                            self.i += 1;
                            return Ok(());
                        }
                        _ => {
                            return Err(invalid(format!("expected ',' or ']' at byte {}", self.i)))
                        }
                    }
                }
            }
            Some(c) if c == b'-' || c.is_ascii_alphanumeric() => {
                // Numbers and literals: the JSON was validated upstream; just find their end.
                while self.peek().is_some_and(|c| {
                    c == b'-' || c == b'+' || c == b'.' || c.is_ascii_alphanumeric()
                }) {
                    self.i += 1;
                }
                Ok(())
            }
            _ => Err(invalid(format!("expected a value at byte {}", self.i))),
        }
    }

    /// An object at the cursor; `field(cursor, key, depth)` must consume each member's value.
    fn object(
        &mut self,
        depth: usize,
        mut field: impl FnMut(&mut Self, &'a [u8], usize) -> Result<(), PayloadError>,
    ) -> Result<(), PayloadError> {
        if depth > MAX_DEPTH {
            return Err(invalid("nested too deeply"));
        }
        self.eat(b'{')?;
        self.ws();
        if self.peek() == Some(b'}') {
            self.i += 1;
            return Ok(());
        }
        loop {
            let key = self.string()?;
            self.eat(b':')?;
            field(self, key, depth)?;
            self.ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b'}') => {
                    self.i += 1;
                    return Ok(());
                }
                _ => return Err(invalid(format!("expected ',' or '}}' at byte {}", self.i))),
            }
            self.ws();
        }
    }
}

/// Reads blockNumber, blockHash and parentHash of `executionPayload` from an envelope that
/// starts at the beginning of `text`; returns them and where the envelope ends. Every other
/// value is skipped, not parsed. A field given twice is refused: the scanner and op-node's
/// decoder (which keeps the last) must not be able to disagree about which block this is.
pub fn scan_envelope(text: &str) -> Result<(BlockMeta, usize), PayloadError> {
    let mut c = Cursor {
        b: text.as_bytes(),
        i: 0,
    };
    let mut found: Option<(Option<&str>, Option<&str>, Option<&str>)> = None;
    c.object(1, |c, key, depth| {
        if key != b"executionPayload" {
            return c.value(depth);
        }
        if found.is_some() {
            return Err(invalid("executionPayload given twice"));
        }
        let (mut number, mut hash, mut parent) = (None, None, None);
        c.object(depth + 1, |c, key, depth| {
            let slot = match key {
                b"blockNumber" => &mut number,
                b"blockHash" => &mut hash,
                b"parentHash" => &mut parent,
                _ => return c.value(depth),
            };
            let name = String::from_utf8_lossy(key).into_owned();
            if slot.is_some() {
                return Err(invalid(format!("{name} given twice")));
            }
            c.ws();
            if c.peek() != Some(b'"') {
                return Err(invalid(format!("{name} must be a string")));
            }
            let raw = c.string()?;
            let s = std::str::from_utf8(raw).map_err(|_| invalid(format!("{name} is not text")))?;
            *slot = Some(s);
            Ok(())
        })?;
        found = Some((number, hash, parent));
        Ok(())
    })?;
    let (number, hash, parent) = found.ok_or_else(|| invalid("missing executionPayload"))?;
    let number = number.ok_or_else(|| invalid("missing blockNumber"))?;
    let number = parse_quantity(number)
        .ok_or_else(|| invalid(format!("blockNumber {number:?} is not a hex quantity")))?;
    let (hash, parent) = match (hash, parent) {
        (Some(h), Some(p)) if is_hash(h) && is_hash(p) => (h, p),
        _ => return Err(invalid("blockHash and parentHash must be 32-byte 0x-hex")),
    };
    Ok((
        BlockMeta {
            number,
            hash: hash.to_ascii_lowercase(),
            parent: parent.to_ascii_lowercase(),
        },
        c.i,
    ))
}

/// The fence's fields of a complete envelope (nothing but whitespace after it).
pub fn block_meta(envelope: &str) -> Result<BlockMeta, PayloadError> {
    let (meta, end) = scan_envelope(envelope)?;
    if !envelope[end..].trim_ascii().is_empty() {
        return Err(invalid("trailing data after the envelope"));
    }
    Ok(meta)
}

/// The one positional parameter of `conductor_commitUnsafePayload` (`[envelope]`, already
/// validated as JSON by the RPC layer), borrowed, with its block fields: no copy of the
/// transactions and no second parse.
pub fn single_envelope_param(params: &str) -> Result<(&str, BlockMeta), PayloadError> {
    let inner = params
        .trim_ascii()
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .ok_or_else(|| invalid("params must be [envelope]"))?
        .trim_ascii();
    if inner.is_empty() {
        return Err(invalid("missing value for required argument 0"));
    }
    if !inner.starts_with('{') {
        return Err(invalid(
            "argument 0 must be an ExecutionPayloadEnvelope object",
        ));
    }
    let (meta, end) = scan_envelope(inner)?;
    if !inner[end..].trim_ascii().is_empty() {
        return Err(invalid("too many arguments, want at most 1"));
    }
    Ok((&inner[..end], meta))
}

// === packing ===

/// 0..=15 for a lowercase hex digit, 0xff otherwise. Uppercase is left as text so that
/// unpacking (which writes lowercase) gives back the same bytes.
const HEX: [u8; 256] = {
    let mut t = [0xffu8; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};

/// Each byte's two lowercase hex digits.
const HEX_PAIRS: [[u8; 2]; 256] = {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut t = [[0u8; 2]; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = [DIGITS[i >> 4], DIGITS[i & 0xf]];
        i += 1;
    }
    t
};

fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn get_varint(b: &[u8], i: &mut usize) -> Option<u64> {
    let mut n = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*i)?;
        *i += 1;
        n |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(n);
        }
    }
    None
}

/// Appends the bytes that lowercase hex `run` (even length) encodes; false, with `out` as it
/// was, if `run` holds anything but lowercase hex digits.
fn decode_hex_into(run: &[u8], out: &mut Vec<u8>) -> bool {
    const L: u64 = 0x0101_0101_0101_0101;
    const H: u64 = 0x8080_8080_8080_8080;
    let mark = out.len();
    out.resize(mark + run.len() / 2, 0);
    let dst = &mut out[mark..];
    // 32 digits at a time in plain, branch-free array arithmetic that the compiler turns into
    // vector instructions (no `unsafe`, no target features): about 4x the word-at-a-time loop.
    let mut blocks = run.chunks_exact(32);
    let mut outs = dst.chunks_exact_mut(16);
    for (w, d) in (&mut blocks).zip(&mut outs) {
        let mut nib = [0u8; 32];
        let mut bad = 0u8;
        for (n, &c) in nib.iter_mut().zip(w) {
            let digit = c.wrapping_sub(b'0');
            let letter = c.wrapping_sub(b'a');
            let is_digit = u8::from(digit < 10);
            let is_letter = u8::from(letter < 6);
            bad |= 1 ^ (is_digit | is_letter);
            // Exactly one of the two is 1 for a valid digit.
            *n = digit.wrapping_mul(is_digit) | letter.wrapping_add(10).wrapping_mul(is_letter);
        }
        if bad != 0 {
            out.truncate(mark);
            return false;
        }
        let mut pairs = [0u16; 16];
        for (v, p) in pairs.iter_mut().zip(nib.chunks_exact(2)) {
            *v = u16::from_le_bytes([p[0], p[1]]);
        }
        for (o, v) in d.iter_mut().zip(pairs) {
            *o = (((v & 0x0f) << 4) | (v >> 8)) as u8;
        }
    }
    let run = blocks.remainder();
    let dst = outs.into_remainder();
    let mut words = run.chunks_exact(8);
    let mut quads = dst.chunks_exact_mut(4);
    // Eight digits at a time (SWAR): a 10 MiB payload is 20 MiB of hex on the commit path.
    for (w, d) in (&mut words).zip(&mut quads) {
        let mut b = [0u8; 8];
        b.copy_from_slice(w);
        let x = u64::from_le_bytes(b);
        // Per byte (all below 0x80, so no carry crosses a byte): the high bit of x + (0x80 - k)
        // is set exactly when the byte is >= k.
        let ge = |k: u64| x.wrapping_add((0x80 - k).wrapping_mul(L));
        let digit = ge(0x30) & !ge(0x3a);
        let letter = ge(0x61) & !ge(0x67);
        if x & H != 0 || (digit | letter) & H != H {
            out.truncate(mark);
            return false;
        }
        // '0'..'9' -> 0..9, 'a'..'f' -> 1..6 + 9.
        let nib = (x & (0x0f * L)).wrapping_add(((letter & H) >> 7).wrapping_mul(9));
        // Pair the nibbles (the first digit is the high one), then pack the four bytes.
        let pairs = ((nib & 0x00ff_00ff_00ff_00ff) << 4) | ((nib >> 8) & 0x00ff_00ff_00ff_00ff);
        let v = (pairs | (pairs >> 8)) & 0x0000_ffff_0000_ffff;
        let v = (v | (v >> 16)) & 0x0000_0000_ffff_ffff;
        d.copy_from_slice(&v.to_le_bytes()[..4]);
    }
    let tail = quads.into_remainder();
    for (p, d) in words.remainder().chunks_exact(2).zip(tail.iter_mut()) {
        let (hi, lo) = (HEX[p[0] as usize], HEX[p[1] as usize]);
        if (hi | lo) > 0x0f {
            out.truncate(mark);
            return false;
        }
        *d = (hi << 4) | lo;
    }
    true
}

/// The stored form of `envelope` (see the module doc). Refuses input containing the marker
/// byte, which valid JSON cannot.
pub fn pack(envelope: &[u8]) -> Result<Vec<u8>, PayloadError> {
    if memchr(TOKEN, envelope).is_some() {
        return Err(invalid("control byte 0x01 in the envelope"));
    }
    let mut out = Vec::with_capacity(envelope.len() / 2 + 1024);
    pack_into(envelope, &mut out);
    Ok(out)
}

/// Appends the stored form of `text` (already checked to hold no marker byte) to `out`.
fn pack_into(text: &[u8], out: &mut Vec<u8>) {
    out.reserve(text.len() / 2 + 64);
    let (mut lit, mut i) = (0usize, 0usize);
    while let Some(k) = memchr(b'"', &text[i..]) {
        let q = i + k;
        if text.get(q + 1) != Some(&b'0') || text.get(q + 2) != Some(&b'x') {
            i = q + 1;
            continue;
        }
        let start = q + 3;
        let Some(len) = memchr(b'"', &text[start..]) else {
            break;
        };
        let end = start + len;
        if len % 2 == 0 {
            let mark = out.len();
            out.extend_from_slice(&text[lit..q]);
            out.push(TOKEN);
            put_varint(out, (len / 2) as u64);
            if decode_hex_into(&text[start..end], out) {
                i = end + 1;
                lit = i;
                continue;
            }
            out.truncate(mark);
        }
        // Not a packable string: left as text. Its contents hold no quote, so go on from the
        // quote that ends them.
        i = end;
    }
    out.extend_from_slice(&text[lit..]);
}

/// The envelope text a stored form was packed from.
pub fn unpack(stored: &[u8]) -> Result<String, PayloadError> {
    let mut out = Vec::with_capacity(stored.len() * 2);
    let mut i = 0usize;
    while let Some(k) = memchr(TOKEN, &stored[i..]) {
        out.extend_from_slice(&stored[i..i + k]);
        i += k + 1;
        let len = get_varint(stored, &mut i).ok_or_else(|| corrupt("truncated length"))?;
        let end = usize::try_from(len)
            .ok()
            .and_then(|l| i.checked_add(l))
            .filter(|&e| e <= stored.len())
            .ok_or_else(|| corrupt("hex string runs past the end"))?;
        out.extend_from_slice(b"\"0x");
        out.reserve(2 * (end - i) + 1);
        for &b in &stored[i..end] {
            out.extend_from_slice(&HEX_PAIRS[b as usize]);
        }
        out.push(b'"');
        i = end;
    }
    out.extend_from_slice(&stored[i..]);
    String::from_utf8(out).map_err(|_| corrupt("not UTF-8 text"))
}

// === chunks ===

fn chunk_value(index: usize, last: bool, data: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(HEADER_LEN + data.len());
    v.extend_from_slice(MAGIC);
    v.push(FORMAT_HEXPACK);
    v.extend_from_slice(&(index as u32).to_be_bytes());
    v.push(u8::from(last));
    v.extend_from_slice(data);
    v
}

/// Splits a stored form into etcd values of at most [`CHUNK_BYTES`] of data, each with a header
/// (index, last) so a reader can tell a complete set from a partial one.
pub fn chunks(stored: &[u8]) -> Vec<Vec<u8>> {
    let parts: Vec<&[u8]> = stored.chunks(CHUNK_BYTES).collect();
    if parts.is_empty() {
        return vec![chunk_value(0, true, &[])];
    }
    let n = parts.len();
    parts
        .into_iter()
        .enumerate()
        .map(|(i, data)| chunk_value(i, i + 1 == n, data))
        .collect()
}

/// Where to end the segment that starts at `from`: about [`SEGMENT_BYTES`] later, just after the
/// next `",` (between two strings, as in the transactions array) so that no hex string is cut
/// (a transaction larger than a segment makes its segment larger).
fn segment_end(envelope: &[u8], from: usize) -> usize {
    let mut at = from + SEGMENT_BYTES;
    while at < envelope.len() {
        let Some(k) = memchr(b',', &envelope[at..]) else {
            break;
        };
        let comma = at + k;
        if envelope[comma - 1] == b'"' {
            return comma + 1;
        }
        at = comma + 1;
    }
    envelope.len()
}

/// [`pack`] and [`chunks`] in one pass that hands each chunk value to `emit` as soon as it is
/// complete, so that its write can start while the rest is packed. Returns the stored size.
pub fn pack_chunked(envelope: &[u8], mut emit: impl FnMut(Vec<u8>)) -> Result<usize, PayloadError> {
    if memchr(TOKEN, envelope).is_some() {
        return Err(invalid("control byte 0x01 in the envelope"));
    }
    let (mut pending, mut index, mut total) = (Vec::new(), 0usize, 0usize);
    let mut from = 0;
    while from < envelope.len() {
        let end = segment_end(envelope, from);
        let before = pending.len();
        pack_into(&envelope[from..end], &mut pending);
        total += pending.len() - before;
        from = end;
        // Strictly more than a chunk: whatever remains at the end is the last chunk.
        let mut sent = 0;
        while pending.len() - sent > CHUNK_BYTES {
            emit(chunk_value(
                index,
                false,
                &pending[sent..sent + CHUNK_BYTES],
            ));
            index += 1;
            sent += CHUNK_BYTES;
        }
        pending.drain(..sent);
    }
    emit(chunk_value(index, true, &pending));
    Ok(total)
}

/// What a chunk's header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkHeader {
    pub index: usize,
    pub last: bool,
}

pub fn chunk_header(value: &[u8]) -> Result<ChunkHeader, PayloadError> {
    if value.len() < HEADER_LEN || &value[..4] != MAGIC {
        return Err(corrupt("not a payload chunk"));
    }
    if value[4] != FORMAT_HEXPACK {
        return Err(corrupt(format!("unknown stored format {}", value[4])));
    }
    let mut index = [0u8; 4];
    index.copy_from_slice(&value[5..9]);
    let last = match value[9] {
        0 => false,
        1 => true,
        other => return Err(corrupt(format!("bad last-chunk flag {other}"))),
    };
    Ok(ChunkHeader {
        index: u32::from_be_bytes(index) as usize,
        last,
    })
}

/// Joins a complete set of chunks (in index order, the last one flagged) back into the
/// envelope text.
pub fn assemble(values: &[&[u8]]) -> Result<String, PayloadError> {
    if values.is_empty() {
        return Err(corrupt("no chunks"));
    }
    let mut stored = Vec::with_capacity(values.iter().map(|v| v.len()).sum());
    for (i, v) in values.iter().enumerate() {
        let h = chunk_header(v)?;
        let want_last = i + 1 == values.len();
        if h.index != i || h.last != want_last {
            return Err(corrupt(format!(
                "chunk {i} of {} has header {h:?}",
                values.len()
            )));
        }
        stored.extend_from_slice(&v[HEADER_LEN..]);
    }
    unpack(&stored)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn h(n: u64) -> String {
        format!("0x{n:064x}")
    }

    fn env(number: &str, txs: &[String]) -> String {
        let txs: Vec<String> = txs.iter().map(|t| format!("\"{t}\"")).collect();
        format!(
            r#"{{"executionPayload":{{"parentHash":"{}","blockNumber":"{number}","logsBloom":"0x{}","extraData":"0x","blockHash":"{}","transactions":[{}],"withdrawals":[]}},"parentBeaconBlockRoot":"{}"}}"#,
            h(15),
            "00".repeat(256),
            h(16),
            txs.join(","),
            h(1)
        )
    }

    #[test]
    fn scans_the_three_fields() {
        let e = env("0x10", &["0x02f8ab".into(), "0xAB".into()]);
        let meta = block_meta(&e).expect("meta");
        assert_eq!(
            meta,
            BlockMeta {
                number: 16,
                hash: h(16),
                parent: h(15)
            }
        );
        // Field order, whitespace and escapes elsewhere do not matter.
        let odd = format!(
            " {{ \"x\\\"y\" : [1, -2.5e3, true, null, {{}}], \"executionPayload\" : {{ \"blockHash\" : \"{}\" , \"transactions\":[\"a\\\\\"], \"parentHash\":\"{}\",\"blockNumber\":\"0x10\" }} }} ",
            h(16),
            h(15)
        );
        assert_eq!(block_meta(&odd).expect("odd layout"), meta);
    }

    #[test]
    fn refuses_what_op_node_does_not_send() {
        for (bad, why) in [
            (
                r#"{"executionPayload":{"blockNumber":"16","blockHash":"0x1","parentHash":"0x2"}}"#
                    .to_string(),
                "decimal number",
            ),
            (
                env("0x10", &[]).replace(
                    "\"blockNumber\":\"0x10\"",
                    "\"blockNumber\":\"0x10\",\"blockNumber\":\"0x11\"",
                ),
                "duplicate",
            ),
            (r#"{"other":1}"#.to_string(), "no payload"),
            (env("0x10", &[]).replace("]}", "]"), "unbalanced"),
            (format!("{{\"a\":{}", "[".repeat(200)), "deep"),
            (format!("{}x", env("0x10", &[])), "trailing"),
        ] {
            assert!(block_meta(&bad).is_err(), "{why}: {bad}");
        }
    }

    #[test]
    fn the_single_param_is_borrowed_whole() {
        let e = env("0x10", &["0x02".into()]);
        let params = format!(" [ {e} ] ");
        let (got, meta) = single_envelope_param(&params).expect("param");
        assert_eq!(got, e);
        assert_eq!(meta.number, 16);
        assert!(single_envelope_param("[]").is_err());
        assert!(single_envelope_param(&format!("[{e},{e}]")).is_err());
        assert!(single_envelope_param("[1]").is_err());
        assert!(single_envelope_param(&format!("{{\"a\":{e}}}")).is_err());
    }

    #[test]
    fn packing_halves_hex_and_round_trips() {
        let tx = format!("0x{}", "ab".repeat(100_000));
        let e = env("0x10", &[tx.clone(), tx]);
        let stored = pack(e.as_bytes()).expect("pack");
        assert!(
            stored.len() < e.len() / 2 + 200,
            "{} -> {}",
            e.len(),
            stored.len()
        );
        assert_eq!(unpack(&stored).expect("unpack"), e);
        let parts = chunks(&stored);
        assert_eq!(parts.len(), stored.len().div_ceil(CHUNK_BYTES));
        let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        assert_eq!(assemble(&refs).expect("assemble"), e);
    }

    #[test]
    fn streamed_chunks_match_the_whole_and_come_early() {
        // 5 MB of transactions: several segments and chunks; also a lone giant transaction.
        let txs: Vec<String> = (0..600)
            .map(|i| format!("0x{:02x}{}", i % 256, "5a".repeat(4095)))
            .collect();
        let giant = vec![format!("0x{}", "c3".repeat(3 * CHUNK_BYTES + 7))];
        for e in [env("0x10", &txs), env("0x11", &giant), env("0x12", &[])] {
            let mut got = Vec::new();
            let total = pack_chunked(e.as_bytes(), |v| got.push(v)).expect("pack");
            let refs: Vec<&[u8]> = got.iter().map(Vec::as_slice).collect();
            assert_eq!(assemble(&refs).expect("assemble"), e);
            let data: usize = got.iter().map(|v| v.len() - HEADER_LEN).sum();
            assert_eq!(data, total);
            assert!(got.iter().all(|v| v.len() - HEADER_LEN <= CHUNK_BYTES));
            assert!(got[..got.len() - 1]
                .iter()
                .all(|v| v.len() - HEADER_LEN == CHUNK_BYTES));
            // Segment cuts between strings cost nothing: the same size as packing whole.
            assert_eq!(
                total,
                pack(e.as_bytes()).expect("pack").len(),
                "{}",
                &e[..40]
            );
        }
    }

    #[test]
    fn incomplete_or_foreign_chunks_are_refused() {
        let big = format!("\"0x{}\"", "cd".repeat(CHUNK_BYTES + 10));
        let stored = pack(big.as_bytes()).expect("pack");
        let parts = chunks(&stored);
        assert_eq!(parts.len(), 2);
        assert!(assemble(&[&parts[0]]).is_err(), "missing last chunk");
        assert!(assemble(&[&parts[1]]).is_err(), "missing first chunk");
        assert!(assemble(&[&parts[1], &parts[0]]).is_err(), "out of order");
        assert!(
            assemble(&[&parts[0], &parts[1], &parts[1]]).is_err(),
            "a chunk after the last"
        );
        assert!(assemble(&[]).is_err());
        assert!(chunk_header(b"json").is_err());
        assert!(unpack(&[TOKEN, 0x05, 1]).is_err(), "truncated");
        assert!(pack(&[b'"', TOKEN, b'"']).is_err());
        assert!(pack_chunked(&[b'"', TOKEN, b'"'], |_| {}).is_err());
        // An empty stored form is one (empty, last) chunk.
        assert_eq!(assemble(&[&chunks(&[])[0]]).expect("empty"), "");
    }

    #[test]
    fn block_and_word_at_a_time_hex_matches_the_table() {
        let all: Vec<u8> = (0..=255u8).collect();
        let hex: String = all.iter().map(|b| format!("{b:02x}")).collect();
        let mut out = Vec::new();
        assert!(decode_hex_into(hex.as_bytes(), &mut out));
        assert_eq!(out, all);
        // Every non-digit byte, in every position of a 32-digit block, of a word and of the
        // tail, is refused and leaves no trace.
        for bad in (0..=255u8).filter(|b| !b.is_ascii_digit() && !(b'a'..=b'f').contains(b)) {
            for pos in 0..50 {
                let mut run = b"0123456789abcdef0123456789abcdef0123456789abcdef00".to_vec();
                run[pos] = bad;
                let mut out = vec![7u8];
                assert!(!decode_hex_into(&run, &mut out), "byte {bad:#x} at {pos}");
                assert_eq!(out, vec![7u8]);
            }
        }
    }

    proptest! {
        /// Any text (the marker byte aside) comes back byte for byte, packed hex or not.
        #[test]
        fn pack_unpack_is_lossless(parts in proptest::collection::vec(
            prop_oneof![
                "[a-zA-Z0-9 ,:{}\\[\\]\\\\]{0,12}",
                "\"0x[0-9a-f]{0,40}\"",
                "\"0x[0-9a-fA-F]{0,9}\"?",
                Just("\"0x\"".to_string()),
                Just("\\\"0xab\"".to_string()),
            ],
            0..30,
        )) {
            let text = parts.concat();
            let stored = pack(text.as_bytes()).expect("pack");
            prop_assert_eq!(unpack(&stored).expect("unpack"), text);
        }

        /// The scanner and serde agree on every envelope serde accepts.
        #[test]
        fn scanner_agrees_with_serde(n in 0u64..u64::MAX, ntx in 0usize..5, pad in "[ \n]{0,3}") {
            let txs: Vec<String> = (0..ntx).map(|i| format!("0x{}", "0f".repeat(i * 7))).collect();
            let e = env(&format!("0x{n:x}"), &txs).replace(',', &format!("{pad},{pad}"));
            let v: serde_json::Value = serde_json::from_str(&e).expect("valid json");
            let meta = block_meta(&e).expect("scan");
            prop_assert_eq!(meta.number, n);
            prop_assert_eq!(Some(meta.hash.as_str()), v["executionPayload"]["blockHash"].as_str());
            prop_assert_eq!(Some(meta.parent.as_str()), v["executionPayload"]["parentHash"].as_str());
        }
    }
}
