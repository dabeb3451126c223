//! AFL++ entry point of the `noise_frame` target (see the crate docs).
fn main() {
    afl::fuzz!(|data: &[u8]| {
        deccom_fuzz::noise_frame(data);
    });
}
