//! The codec every generated service and client uses: prost's, plus one
//! check on the way in. A request message that [`crate::takes`] declares is
//! refused with `INVALID_ARGUMENT` when it sets a field its method does not
//! take (an output-only field, or one that method ignores), naming the field,
//! before any handler runs. So no create or update can drop input silently,
//! and a handler cannot forget the check.

use std::marker::PhantomData;

use bytes::Buf as _;
use prost::Message;
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

/// `tonic_prost::ProstCodec` with the input check of [`crate::takes`].
#[derive(Debug, Clone)]
pub struct CheckedCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for CheckedCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for CheckedCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = CheckedEncoder<T>;
    type Decoder = CheckedDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        CheckedEncoder(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        CheckedDecoder(PhantomData)
    }
}

#[derive(Debug, Clone)]
pub struct CheckedEncoder<T>(PhantomData<T>);

impl<T: Message> Encoder for CheckedEncoder<T> {
    type Item = T;
    type Error = Status;

    fn encode(&mut self, item: T, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(buf)
            .map_err(|e| Status::internal(format!("encoding a message: {e}")))
    }
}

#[derive(Debug, Clone)]
pub struct CheckedDecoder<U>(PhantomData<U>);

impl<U: Message + Default + 'static> Decoder for CheckedDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        let decode_error = |e: prost::DecodeError| Status::internal(e.to_string());
        match crate::takes::of::<U>() {
            None => U::decode(buf).map(Some).map_err(decode_error),
            Some(takes) => {
                let bytes = buf.copy_to_bytes(buf.remaining());
                let message = U::decode(bytes.clone()).map_err(decode_error)?;
                takes
                    .check(&bytes)
                    .map_err(|e| Status::invalid_argument(e.to_string()))?;
                Ok(Some(message))
            }
        }
    }
}
