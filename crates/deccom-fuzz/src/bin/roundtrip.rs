//! AFL++ entry point of the `roundtrip` target (see the crate docs).
fn main() {
    afl::fuzz!(|data: &[u8]| {
        deccom_fuzz::roundtrip(data);
    });
}
