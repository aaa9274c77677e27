//! `api/openapi.yaml` and the router must agree: same routes, and every
//! error code documented.

use std::collections::BTreeSet;

use yaml_rust2::{Yaml, YamlLoader};

fn spec() -> Yaml {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/api/openapi.yaml")).unwrap();
    YamlLoader::load_from_str(&text).unwrap().remove(0)
}

#[test]
fn every_route_is_documented_and_every_documented_route_exists() {
    let spec = spec();
    let mut documented = BTreeSet::new();
    for (path, item) in spec["paths"].as_hash().expect("paths") {
        for (method, operation) in item.as_hash().unwrap() {
            let method = method.as_str().unwrap();
            if method == "parameters" {
                continue;
            }
            let path = path.as_str().unwrap();
            let responses =
                operation["responses"].as_hash().unwrap_or_else(|| panic!("{method} {path} has no responses"));
            let has_error =
                responses.keys().any(|code| code.as_str().is_some_and(|c| c.starts_with('4') || c.starts_with('5')));
            if path.starts_with("/v1/") && path != "/v1/keys" {
                assert!(has_error, "{method} {path} documents no error response");
            }
            documented.insert((method.to_uppercase(), path.to_owned()));
        }
    }
    let served: BTreeSet<(String, String)> = amber_server::http::routes()
        .into_iter()
        // A wildcard segment (`{*path}`) is one parameter in OpenAPI.
        .map(|(method, path, _)| (method.to_string(), path.replace("{*", "{")))
        .collect();
    let undocumented: Vec<_> = served.difference(&documented).collect();
    let unserved: Vec<_> = documented.difference(&served).collect();
    assert!(undocumented.is_empty(), "routes missing from api/openapi.yaml: {undocumented:?}");
    assert!(unserved.is_empty(), "api/openapi.yaml documents routes the router lacks: {unserved:?}");
}

#[test]
fn every_error_code_is_documented() {
    let spec = spec();
    let documented: BTreeSet<&str> = spec["components"]["schemas"]["ErrorCode"]["enum"]
        .as_vec()
        .expect("components.schemas.ErrorCode.enum")
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    let used: BTreeSet<&str> = amber_server::error::ERROR_CODES.iter().copied().collect();
    assert_eq!(documented, used);
}
