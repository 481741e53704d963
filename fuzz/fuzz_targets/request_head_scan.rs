#![no_main]
//! See moodle_edge::internals::fuzzing::request_head_scan for what is checked.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    moodle_edge::internals::fuzzing::request_head_scan(data);
});
