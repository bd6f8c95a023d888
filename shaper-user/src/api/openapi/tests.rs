//! The document is an exact contract: these tests fail when a bound goes missing.

use serde_json::Value;

use super::document;

/// Every schema in `v` (at JSON path `at`) whose type admits an integer without both
/// `minimum` and `maximum`, or a string without `maxLength` (enums and consts are bounded).
fn unbounded(v: &Value, at: &str, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            let types: Vec<&str> = match m.get("type") {
                Some(Value::String(t)) => vec![t.as_str()],
                Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
                _ => Vec::new(),
            };
            let enumerated = m.contains_key("enum") || m.contains_key("const");
            if types.contains(&"integer")
                && !enumerated
                && !(m.contains_key("minimum") && m.contains_key("maximum"))
            {
                out.push(format!("{at}: integer without minimum/maximum"));
            }
            if types.contains(&"number") {
                out.push(format!("{at}: number (the API takes integers only)"));
            }
            if types.contains(&"string") && !enumerated && !m.contains_key("maxLength") {
                out.push(format!("{at}: string without maxLength"));
            }
            for (k, v) in m {
                unbounded(v, &format!("{at}/{k}"), out);
            }
        }
        Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                unbounded(v, &format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

#[test]
fn every_integer_and_string_is_bounded() {
    let mut out = Vec::new();
    unbounded(&document(), "#", &mut out);
    assert!(out.is_empty(), "unbounded schemas:\n{}", out.join("\n"));
}

#[test]
fn the_walker_finds_unbounded_schemas() {
    let mut out = Vec::new();
    let doc = serde_json::json!({
        "a": { "type": "integer", "minimum": 0 },
        "b": { "type": ["string", "null"] },
        "c": { "type": "string", "enum": ["x"] },
        "d": { "type": "integer", "minimum": 0, "maximum": 1 }
    });
    unbounded(&doc, "#", &mut out);
    assert_eq!(
        out,
        [
            "#/a: integer without minimum/maximum",
            "#/b: string without maxLength"
        ]
    );
}

#[test]
fn every_error_response_is_problem_json_and_every_body_route_documents_400_and_413() {
    let doc = document();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            let responses = op["responses"].as_object().unwrap();
            for (code, r) in responses {
                if code.starts_with('4') || code.starts_with('5') {
                    assert!(
                        r["content"]["application/problem+json"].is_object(),
                        "{method} {path} {code} is not problem+json"
                    );
                }
            }
            if op.get("requestBody").is_some() {
                for code in ["400", "413"] {
                    assert!(responses.contains_key(code), "{method} {path} lacks {code}");
                }
            }
            if op.get("security").is_none() {
                for code in ["401", "403"] {
                    assert!(responses.contains_key(code), "{method} {path} lacks {code}");
                }
            }
        }
    }
}

#[test]
fn ids_stay_within_sqlite_integers_and_links_name_real_operations() {
    let doc = document();
    let ops: Vec<String> = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|m| m.as_object().unwrap().values())
        .map(|op| op["operationId"].as_str().unwrap().to_owned())
        .collect();
    let mut links = 0;
    for ops_of_path in doc["paths"].as_object().unwrap().values() {
        for op in ops_of_path.as_object().unwrap().values() {
            for r in op["responses"].as_object().unwrap().values() {
                for link in r["links"].as_object().into_iter().flat_map(|l| l.values()) {
                    let target = link["operationId"].as_str().unwrap();
                    assert!(ops.iter().any(|o| o == target), "link to {target}");
                    links += 1;
                }
            }
        }
    }
    assert!(links >= 8, "{links} links");
    let event_id = &doc["paths"]["/v1/events/{id}"]["get"]["parameters"][0]["schema"];
    assert_eq!(event_id["minimum"], 1);
    assert_eq!(event_id["maximum"], i64::MAX);
}
