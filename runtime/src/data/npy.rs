//! The subset of numpy's `.npy` format (version 1.0, little-endian integers, C order) that the
//! index cache writes and reads back, so the cached arrays can also be opened with numpy.

use std::io::Write;
use std::path::Path;

use super::{Error, Result};

/// An integer array element type the cache uses.
pub trait NpyElement: Copy {
    /// numpy `descr`, e.g. `<i4`.
    const DESCR: &'static str;
    /// Size in bytes.
    const SIZE: usize;
    /// Little-endian encoding.
    fn write_le(self, out: &mut Vec<u8>);
    /// Decoding from exactly `SIZE` bytes.
    fn read_le(b: &[u8]) -> Self;
}

macro_rules! npy_int {
    ($t:ty, $descr:expr) => {
        impl NpyElement for $t {
            const DESCR: &'static str = $descr;
            const SIZE: usize = std::mem::size_of::<$t>();
            fn write_le(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            fn read_le(b: &[u8]) -> Self {
                let mut a = [0u8; std::mem::size_of::<$t>()];
                a.copy_from_slice(b);
                <$t>::from_le_bytes(a)
            }
        }
    };
}

npy_int!(i16, "<i2");
npy_int!(i32, "<i4");
npy_int!(i64, "<i8");
npy_int!(u32, "<u4");

fn header(descr: &str, shape: &[usize]) -> Vec<u8> {
    let dims = match shape {
        [n] => format!("({n},)"),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {dims}, }}");
    // numpy leaves room for the first axis to grow to 21 digits so headers can be rewritten
    // in place; copying that keeps our files byte-identical to `np.save`.
    let first = shape.first().map_or(0, |d| d.to_string().len());
    if !shape.is_empty() {
        dict.extend(std::iter::repeat_n(' ', 21usize.saturating_sub(first)));
    }
    // magic (6) + version (2) + header length (2) + dict + padding + '\n' is a multiple of 64.
    let unpadded = 10 + dict.len() + 1;
    let pad = (64 - unpadded % 64) % 64;
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&((dict.len() + pad + 1) as u16).to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out.extend(std::iter::repeat_n(b' ', pad));
    out.push(b'\n');
    out
}

/// Encodes `data` with `shape` (the product of `shape` must equal `data.len()`).
pub fn encode<T: NpyElement>(data: &[T], shape: &[usize]) -> Vec<u8> {
    debug_assert_eq!(shape.iter().product::<usize>(), data.len());
    let mut out = header(T::DESCR, shape);
    out.reserve(data.len() * T::SIZE);
    for &x in data {
        x.write_le(&mut out);
    }
    out
}

/// Writes `data` atomically (temporary file, then rename).
pub fn write<T: NpyElement>(path: &Path, data: &[T], shape: &[usize]) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp-{}", std::process::id()));
    let tmp = std::path::PathBuf::from(tmp);
    let mut f = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    f.write_all(&encode(data, shape))
        .and_then(|_| f.sync_all())
        .map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

/// Reads an array written by [`write`] (or numpy) with element type `T`; returns the data and
/// shape.
pub fn read<T: NpyElement>(path: &Path) -> Result<(Vec<T>, Vec<usize>)> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let bad = |r: &str| Error::corrupt(path, format!("{r}; delete the cache file to rebuild it"));
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" || bytes[6] != 1 {
        return Err(bad("not a version 1 .npy file"));
    }
    let hlen = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let dict = bytes
        .get(10..10 + hlen)
        .and_then(|h| std::str::from_utf8(h).ok())
        .ok_or_else(|| bad("truncated .npy header"))?;
    if !dict.contains(&format!("'descr': '{}'", T::DESCR)) || dict.contains("'fortran_order': True")
    {
        return Err(bad(&format!(
            "expected C-ordered {} data, header is {dict}",
            T::DESCR
        )));
    }
    let shape_txt = dict
        .split("'shape': (")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .ok_or_else(|| bad("no shape in .npy header"))?;
    let shape = shape_txt
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|_| bad("invalid shape in .npy header"))?;
    let count: usize = shape.iter().product();
    let body = &bytes[10 + hlen..];
    if body.len() != count * T::SIZE {
        return Err(bad(&format!(
            "{} data bytes for shape {shape:?}, expected {}",
            body.len(),
            count * T::SIZE
        )));
    }
    Ok((body.chunks_exact(T::SIZE).map(T::read_le).collect(), shape))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_matches_numpy() {
        // np.save of np.arange(3, dtype=np.int32) (numpy 2.4) writes a 128-byte header.
        let bytes = encode(&[0i32, 1, 2], &[3]);
        assert_eq!(bytes.len(), 128 + 12);
        assert_eq!(&bytes[..10], b"\x93NUMPY\x01\x00v\x00");
        let text = String::from_utf8_lossy(&bytes[10..128]).to_string();
        assert!(text.starts_with("{'descr': '<i4', 'fortran_order': False, 'shape': (3,), }"));
        assert!(text.ends_with(" \n"));
    }

    #[test]
    fn round_trip_2d() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("a.npy");
        write(&p, &[1i64, 2, 3, 4, 5, 6], &[3, 2]).expect("write");
        let (data, shape) = read::<i64>(&p).expect("read");
        assert_eq!(data, [1, 2, 3, 4, 5, 6]);
        assert_eq!(shape, [3, 2]);
        assert!(read::<i32>(&p).is_err());
    }
}
