//! Cutting files into chunks: fixed page-aligned blocks for PostgreSQL relation files (scattered
//! page changes then cost only the changed blocks), content-defined chunks (FastCDC) for
//! everything else (inserts and shifts still deduplicate). See DESIGN.md "Chunking".

use std::io::Read;

/// How a file is cut.
#[derive(Debug, Clone, Copy)]
pub enum Chunking {
    /// Fixed blocks of this many bytes.
    Fixed(usize),
    /// FastCDC with this average size (min = avg/4, max = avg*4).
    ContentDefined(usize),
}

/// Feeds `reader` to `each` in content-defined chunks of about `avg` bytes; memory is bounded
/// by the largest chunk. (Fixed blocks are cut by the backup pipeline itself, straight from its
/// read buffers.)
pub fn for_each_chunk<R: Read, E>(
    reader: R,
    avg: usize,
    mut each: impl FnMut(&[u8]) -> Result<(), E>,
    io_error: impl Fn(std::io::Error) -> E,
) -> Result<(), E> {
    let cdc = fastcdc::v2020::StreamCDC::new(reader, avg / 4, avg, avg.saturating_mul(4));
    for chunk in cdc {
        let chunk = chunk.map_err(|e| match e {
            fastcdc::v2020::Error::IoError(io) => io_error(io),
            other => io_error(std::io::Error::other(other.to_string())),
        })?;
        each(&chunk.data)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cdc_covers_the_input_exactly() {
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
        let mut out = Vec::new();
        for_each_chunk(
            &data[..],
            64 << 10,
            |c| {
                out.extend_from_slice(c);
                Ok::<_, std::io::Error>(())
            },
            |e| e,
        )
        .unwrap();
        assert_eq!(out, data);
    }
}
