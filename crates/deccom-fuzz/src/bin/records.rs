//! AFL++ entry point of the `records` target (see the crate docs).
fn main() {
    afl::fuzz!(|data: &[u8]| {
        deccom_fuzz::records(data);
    });
}
