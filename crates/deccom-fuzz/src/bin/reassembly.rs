//! AFL++ entry point of the `reassembly` target (see the crate docs).
fn main() {
    afl::fuzz!(|data: &[u8]| {
        deccom_fuzz::reassembly(data);
    });
}
