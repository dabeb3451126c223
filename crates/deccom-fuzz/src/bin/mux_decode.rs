//! AFL++ entry point of the `mux_decode` target (see the crate docs).
fn main() {
    afl::fuzz!(|data: &[u8]| {
        deccom_fuzz::mux_decode(data);
    });
}
