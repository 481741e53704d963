#![no_main]
//! See moodle_edge::internals::fuzzing::saml_response_shape for what is checked.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    moodle_edge::internals::fuzzing::saml_response_shape(data);
});
