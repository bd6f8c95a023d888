//! Request bodies are checked against the shape their OpenAPI schema gives before they are
//! deserialized. serde's derived struct visitors also accept a JSON array, filling the fields
//! by position, so `{"qos": [100]}` would silently have set the grant's first field. Only the
//! shape is checked here (an array where the schema wants an object); values and field names
//! are serde's business, and its errors name them.

use std::sync::OnceLock;

use serde_json::Value;

/// A type the API reads from a JSON body, and the name of its schema in the OpenAPI
/// document's `components.schemas`.
pub trait ApiBody: serde::de::DeserializeOwned {
    const SCHEMA: &'static str;
}

fn document() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(super::openapi::document)
}

/// The first place in `value` (a dotted path; "" for the body itself) holding an array where
/// the schema `name` wants an object.
pub fn array_for_object(value: &Value, name: &str) -> Option<String> {
    let doc = document();
    let schema = &doc["components"]["schemas"][name];
    walk(doc, value, schema, String::new(), 0)
}

fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => r
            .strip_prefix("#/components/schemas/")
            .map_or(&Value::Null, |n| &doc["components"]["schemas"][n]),
        None => schema,
    }
}

/// Whether `schema` admits a JSON type `ty` ("object", "array", …); a schema without `type`
/// (or one that only combines others) admits anything as far as this check goes.
fn admits(doc: &Value, schema: &Value, ty: &str) -> bool {
    let schema = resolve(doc, schema);
    // Alternatives decide only when the schema has no type of its own (an object's `anyOf`
    // may just require one property or another).
    if let Some(alts) = schema
        .get("oneOf")
        .or_else(|| schema.get("anyOf"))
        .filter(|_| schema.get("type").is_none())
    {
        return alts
            .as_array()
            .is_none_or(|a| a.iter().any(|s| admits(doc, s, ty)));
    }
    match schema.get("type") {
        Some(Value::String(t)) => t == ty || (t == "number" && ty == "integer"),
        Some(Value::Array(ts)) => ts.iter().any(|t| t.as_str() == Some(ty)),
        _ => true,
    }
}

fn walk(doc: &Value, value: &Value, schema: &Value, path: String, depth: u32) -> Option<String> {
    if depth > 32 {
        return None;
    }
    let schema = resolve(doc, schema);
    match value {
        Value::Array(items) => {
            if admits_only_objects(doc, schema) {
                return Some(path);
            }
            let item = schema.get("items")?;
            items
                .iter()
                .enumerate()
                .find_map(|(i, v)| walk(doc, v, item, format!("{path}[{i}]"), depth + 1))
        }
        Value::Object(fields) => {
            // The alternative for an object: the first that admits one. A schema with
            // properties of its own uses `anyOf` only to require some of them.
            if let Some(alts) = schema
                .get("oneOf")
                .or_else(|| schema.get("anyOf"))
                .filter(|_| schema.get("properties").is_none())
            {
                let alt = alts.as_array()?.iter().find(|s| admits(doc, s, "object"))?;
                return walk(doc, value, alt, path, depth + 1);
            }
            let props = schema.get("properties").and_then(Value::as_object);
            let extra = schema.get("additionalProperties").filter(|s| s.is_object());
            fields.iter().find_map(|(k, v)| {
                let sub = props.and_then(|p| p.get(k)).or(extra)?;
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                walk(doc, v, sub, p, depth + 1)
            })
        }
        _ => None,
    }
}

/// Whether every JSON type `schema` admits is an object (or null): the schemas of structs.
fn admits_only_objects(doc: &Value, schema: &Value) -> bool {
    admits(doc, schema, "object")
        && ["array", "string", "integer", "boolean"]
            .iter()
            .all(|t| !admits(doc, schema, t))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn arrays_where_objects_belong_are_found_with_their_path() {
        assert_eq!(
            array_for_object(&json!([100]), "QosLevel"),
            Some(String::new())
        );
        assert_eq!(
            array_for_object(&json!({ "modem": "cm1", "qos": [100] }), "CreateEvent"),
            Some("qos".into())
        );
        assert_eq!(
            array_for_object(
                &json!({ "modem": "cm1", "qos": { "targets": [1] } }),
                "CreateEvent"
            ),
            Some("qos.targets".into())
        );
        // Well-shaped bodies, and values of other types (serde judges those), pass.
        assert_eq!(
            array_for_object(
                &json!({ "modem": "cm1", "qos": { "max_down_bps": 1 } }),
                "CreateEvent"
            ),
            None
        );
        assert_eq!(array_for_object(&json!({ "qos": 5 }), "CreateEvent"), None);
    }
}

/// `ApiBody` for each type, with the name of its schema in the OpenAPI document.
macro_rules! api_bodies {
    ($($ty:path => $schema:literal),+ $(,)?) => {
        $(impl ApiBody for $ty {
            const SCHEMA: &'static str = $schema;
        })+
    };
}

api_bodies! {
    super::routes::QosBody => "QosLevel",
    super::routes::CreateEvent => "CreateEvent",
    super::routes::PatchEvent => "PatchEvent",
    super::nsm::ProviderBody => "ProviderBody",
    super::nsm::ApplicationBody => "ApplicationBody",
    super::nsm::LinkBody => "LinkBody",
    super::nsm::SessionBody => "SessionBody",
    crate::nsm::model::AllocationRequest => "AllocationRequest",
}

#[cfg(test)]
mod schema_names {
    use super::*;

    fn exists<T: ApiBody>() {
        let schema = &document()["components"]["schemas"][T::SCHEMA];
        assert_eq!(schema["type"], "object", "{}", T::SCHEMA);
    }

    #[test]
    fn every_body_names_an_object_schema_of_the_document() {
        exists::<super::super::routes::QosBody>();
        exists::<super::super::routes::CreateEvent>();
        exists::<super::super::routes::PatchEvent>();
        exists::<super::super::nsm::ProviderBody>();
        exists::<super::super::nsm::ApplicationBody>();
        exists::<super::super::nsm::LinkBody>();
        exists::<super::super::nsm::SessionBody>();
        exists::<crate::nsm::model::AllocationRequest>();
    }
}
