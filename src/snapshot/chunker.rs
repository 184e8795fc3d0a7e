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

/// Feeds `reader` chunk by chunk to `each`; memory is bounded by the largest chunk.
pub fn for_each_chunk<R: Read, E>(
    reader: R,
    chunking: Chunking,
    mut each: impl FnMut(&[u8]) -> Result<(), E>,
    io_error: impl Fn(std::io::Error) -> E,
) -> Result<(), E> {
    match chunking {
        Chunking::Fixed(size) => {
            let mut reader = reader;
            let mut buf = vec![0u8; size];
            loop {
                let n = read_full(&mut reader, &mut buf).map_err(&io_error)?;
                if n == 0 {
                    return Ok(());
                }
                each(&buf[..n])?;
                if n < size {
                    return Ok(());
                }
            }
        }
        Chunking::ContentDefined(avg) => {
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
    }
}

/// Reads until `buf` is full or EOF; returns the bytes read.
pub fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_and_cdc_cover_the_input_exactly() {
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
        for chunking in [Chunking::Fixed(65536), Chunking::ContentDefined(64 << 10)] {
            let mut out = Vec::new();
            for_each_chunk(&data[..], chunking, |c| { out.extend_from_slice(c); Ok::<_, std::io::Error>(()) }, |e| e).unwrap();
            assert_eq!(out, data);
        }
    }
}
