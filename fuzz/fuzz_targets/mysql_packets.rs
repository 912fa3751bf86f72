//! Fuzz every decoder a MySQL peer reaches: frame splitting, the response
//! scanner, the handshake response parser, ERR/row parsing and the
//! statement classifier. Run: `bash scripts/fuzz.sh [seconds]`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    switchyard_mysql::wire::decode_untrusted(data);
});
