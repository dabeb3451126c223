//! Errors crossing into JavaScript.
//!
//! Every error thrown by the addon has a message of the form `ERR_DECCOM_<CODE>: <sentence>`; the
//! TypeScript layer (`ts/errors.ts`, `fromNative`) turns it into a `DeccomError` whose `code` is the
//! prefix. Keeping the code in the message keeps this layer independent of napi's error plumbing.

/// Stable error codes raised by the binding itself (deccom-core errors carry their own).
#[derive(Clone, Copy, Debug)]
pub enum Code {
  AddressInUse,
  InvalidAddress,
  InvalidArgument,
  Socket,
  Closed,
  KeyFile,
}

impl Code {
  pub fn as_str(self) -> &'static str {
    match self {
      Code::AddressInUse => "ERR_DECCOM_ADDRESS_IN_USE",
      Code::InvalidAddress => "ERR_DECCOM_INVALID_ADDRESS",
      Code::InvalidArgument => "ERR_DECCOM_INVALID_ARGUMENT",
      Code::Socket => "ERR_DECCOM_SOCKET",
      Code::Closed => "ERR_DECCOM_CLOSED",
      Code::KeyFile => "ERR_DECCOM_KEY_FILE",
    }
  }
}

/// A napi error carrying `code` in the agreed message form.
pub fn coded(code: Code, message: impl std::fmt::Display) -> napi::Error {
  napi::Error::from_reason(format!("{}: {message}", code.as_str()))
}

/// Converts a deccom-core error.
pub fn core(e: deccom_core::Error) -> napi::Error {
  napi::Error::from_reason(format!("{}: {e}", e.code()))
}

/// Converts a reliable-UDP error.
pub fn rudp(e: deccom_core::rudp::RudpError) -> napi::Error {
  napi::Error::from_reason(format!("{}: {e}", e.code()))
}
