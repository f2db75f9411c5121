//! Config parsing: any text is a valid config or a `ConfigError`, never a panic
//! (overflowing sizes included), and a valid config survives a TOML round trip.
#![no_main]

use dit_train::config::ExperimentConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = ExperimentConfig::parse(text) {
        let again = ExperimentConfig::parse(&config.to_toml()).expect("a valid config re-parses");
        assert_eq!(again.to_toml(), config.to_toml());
    }
});
