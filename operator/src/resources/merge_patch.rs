//! JSON merge patch (RFC 7386), used for the pod-spec overrides of a `PretrainJob`.

use serde_json::Value;

/// Applies `patch` to `target` in place: objects merge recursively, `null` deletes a key, any
/// other value (arrays included) replaces.
pub fn apply(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Default::default());
    }
    let Value::Object(map) = target else { return };
    for (k, v) in patch {
        if v.is_null() {
            map.remove(k);
        } else {
            apply(map.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rfc7386_examples() {
        let mut t = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        apply(&mut t, &json!({"a": "z", "c": {"f": null}}));
        assert_eq!(t, json!({"a": "z", "c": {"d": "e"}}));
        let mut t = json!({"a": [1]});
        apply(&mut t, &json!({"a": [2, 3]}));
        assert_eq!(t, json!({"a": [2, 3]}));
    }
}
