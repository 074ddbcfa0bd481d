//! Arbitrary bytes into both protocol decoders: never a panic. A decode
//! error ends the stream (as it closes a connection); a decoded frame is
//! taken and decoding goes on.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use pigeon_protocol::{ClientCodec, ServerCodec};
use tokio_util::codec::Decoder;

fn drain<D: Decoder>(decoder: &mut D, data: &[u8]) {
    // Fed in two pieces, as a socket might deliver them.
    let split = data.first().map_or(0, |&b| usize::from(b)).min(data.len());
    let mut buf = BytesMut::new();
    for piece in [&data[..split], &data[split..]] {
        buf.extend_from_slice(piece);
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(_)) => continue,
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
    let _ = decoder.decode_eof(&mut buf);
}

fuzz_target!(|data: &[u8]| {
    drain(&mut ServerCodec::default(), data);
    drain(&mut ClientCodec::default(), data);
});
