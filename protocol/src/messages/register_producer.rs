//! RegisterProducer (API key 21): a producer names itself and gets the
//! producer id and epoch its idempotent batches carry.
//!
//! Request v0: `name` string (1–255 bytes of UTF-8, e.g. `orders-service-7`).
//! Response v0: `producer_id` i64, `producer_epoch` i16.
//!
//! Registering a name again returns the same producer id with the next
//! epoch; batches of older epochs are refused (`ProducerFenced`) from then
//! on, so a zombie instance of the same service cannot write.

use super::Message;
use crate::api::ApiKey;
use crate::codec_error::{CodecError, CodecErrorKind};
use crate::limits::MAX_SOFTWARE_NAME_LEN;
use crate::wire::{Reader, Writer};

/// Longest producer name.
pub const MAX_PRODUCER_NAME_LEN: usize = MAX_SOFTWARE_NAME_LEN;

/// Register (or re-register) an idempotent producer by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterProducerRequest {
    /// Stable name of the producer, 1 to 255 bytes.
    pub name: String,
}

/// The producer's identity for this session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegisterProducerResponse {
    /// Id to put in every batch.
    pub producer_id: i64,
    /// Epoch of this session; older epochs are fenced.
    pub producer_epoch: i16,
}

impl Message for RegisterProducerRequest {
    const API_KEY: ApiKey = ApiKey::RegisterProducer;

    fn encode(&self, _version: u16, w: &mut Writer<'_>) -> Result<(), CodecError> {
        w.string("name", &self.name, MAX_PRODUCER_NAME_LEN)
    }

    fn decode(_version: u16, r: &mut Reader) -> Result<Self, CodecError> {
        let start = r.offset();
        let name = r.string("name", MAX_PRODUCER_NAME_LEN)?;
        if name.is_empty() {
            return Err(CodecError::new(
                start,
                CodecErrorKind::InvalidValue {
                    field: "name",
                    value: 0,
                },
            ));
        }
        Ok(RegisterProducerRequest { name })
    }
}

impl Message for RegisterProducerResponse {
    const API_KEY: ApiKey = ApiKey::RegisterProducer;

    fn encode(&self, _version: u16, w: &mut Writer<'_>) -> Result<(), CodecError> {
        w.i64(self.producer_id);
        w.u16(self.producer_epoch as u16);
        Ok(())
    }

    fn decode(_version: u16, r: &mut Reader) -> Result<Self, CodecError> {
        Ok(RegisterProducerResponse {
            producer_id: r.i64("producer_id")?,
            producer_epoch: r.u16("producer_epoch")? as i16,
        })
    }
}
