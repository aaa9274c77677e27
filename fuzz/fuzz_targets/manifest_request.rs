//! A manifest request body as `PUT .../tags/{tag}` receives it.
#![no_main]

use amber_core::manifest::ManifestRequest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = serde_json::from_slice::<ManifestRequest>(data)
        && let Ok(normalised) = request.normalise()
    {
        for file in &normalised.files {
            assert!(!file.path.as_str().split('/').any(|s| s == ".."));
        }
    }
});
