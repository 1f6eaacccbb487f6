//! TensorBoard's `Event` message: the subset we write (scalars, text) and its protobuf form.
//!
//! The messages and field numbers are those of `tensorboard/compat/proto` (`event.proto`,
//! `summary.proto`, `tensor.proto`):
//!
//! ```text
//! Event          { double wall_time = 1; int64 step = 2; string file_version = 3; Summary summary = 5; }
//! Summary        { repeated Value value = 1; }
//! Value          { string tag = 1; float simple_value = 2; TensorProto tensor = 8;
//!                  SummaryMetadata metadata = 9; }
//! SummaryMetadata{ PluginData plugin_data = 1; }   PluginData { string plugin_name = 1; bytes content = 2; }
//! TensorProto    { DataType dtype = 1; TensorShapeProto tensor_shape = 2; repeated bytes string_val = 8; }
//! ```
//!
//! A text summary is exactly what TensorBoard's own `text_pb` (tensorboard 2.21.0) produces: a
//! scalar-shaped `DT_STRING` tensor with plugin name `"text"` and empty plugin content (the
//! serialized default `TextPluginData`). A scalar shape makes the text plugin render the string
//! as Markdown; tensorboardX's shape `[1]` would render it as a one-cell table.

use super::protobuf::{
    put_bytes_field, put_double_field, put_float_field, put_varint_field, DecodeError, Decoder,
    Field,
};

/// The `file_version` every event file starts with.
pub const FILE_VERSION: &str = "brain.Event:2";
/// `DataType.DT_STRING` in `types.proto`.
const DT_STRING: u64 = 7;
/// The text plugin's name in `SummaryMetadata.plugin_data`.
const TEXT_PLUGIN: &str = "text";

/// One event record: a header (`file_version`) or a summary of tagged values at a step.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Seconds since the Unix epoch when the event was written.
    pub wall_time: f64,
    /// The x coordinate TensorBoard plots against (training step, or samples for `vs samples`).
    pub step: i64,
    /// `Some("brain.Event:2")` in the first record of a file, `None` elsewhere.
    pub file_version: Option<String>,
    /// The summary values; empty for the header record.
    pub values: Vec<SummaryValue>,
}

/// One tagged value of a summary.
#[derive(Debug, Clone, PartialEq)]
pub struct SummaryValue {
    /// The tag (chart name), e.g. `loss`.
    pub tag: String,
    /// The payload.
    pub data: SummaryData,
}

/// The payload of a [`SummaryValue`].
#[derive(Debug, Clone, PartialEq)]
pub enum SummaryData {
    /// A scalar (`simple_value`), shown by the scalars dashboard.
    Scalar(f32),
    /// A text summary with a single string, shown by the text dashboard.
    Text(String),
    /// Anything else (histograms, images, other plugins' tensors); read but not interpreted.
    Other {
        /// The plugin name from the value's metadata, if any.
        plugin_name: Option<String>,
    },
}

impl Event {
    /// The header record: `file_version = "brain.Event:2"`.
    pub fn header(wall_time: f64) -> Self {
        Event {
            wall_time,
            step: 0,
            file_version: Some(FILE_VERSION.to_owned()),
            values: vec![],
        }
    }

    /// A summary with one scalar.
    pub fn scalar(wall_time: f64, step: i64, tag: &str, value: f32) -> Self {
        Self::summary(wall_time, step, tag, SummaryData::Scalar(value))
    }

    /// A summary with one text value.
    pub fn text(wall_time: f64, step: i64, tag: &str, text: &str) -> Self {
        Self::summary(wall_time, step, tag, SummaryData::Text(text.to_owned()))
    }

    fn summary(wall_time: f64, step: i64, tag: &str, data: SummaryData) -> Self {
        let values = vec![SummaryValue {
            tag: tag.to_owned(),
            data,
        }];
        Event {
            wall_time,
            step,
            file_version: None,
            values,
        }
    }

    /// The scalar tagged `tag` in this event, if there is one.
    pub fn scalar_value(&self, tag: &str) -> Option<f32> {
        self.values.iter().find_map(|v| match &v.data {
            SummaryData::Scalar(x) if v.tag == tag => Some(*x),
            _ => None,
        })
    }

    /// The text tagged `tag` in this event, if there is one.
    pub fn text_value(&self, tag: &str) -> Option<&str> {
        self.values.iter().find_map(|v| match &v.data {
            SummaryData::Text(s) if v.tag == tag => Some(s.as_str()),
            _ => None,
        })
    }

    /// The protobuf encoding, byte-identical to Python's `Event.SerializeToString()`.
    ///
    /// [`SummaryData::Other`] values cannot be re-encoded and are left out.
    pub fn encode(&self) -> Vec<u8> {
        let mut buf = Vec::with_capacity(64);
        // proto3 leaves out fields equal to their default (+0.0, 0, "").
        if self.wall_time.to_bits() != 0 {
            put_double_field(&mut buf, 1, self.wall_time);
        }
        if self.step != 0 {
            put_varint_field(&mut buf, 2, self.step as u64);
        }
        if let Some(version) = self.file_version.as_deref().filter(|v| !v.is_empty()) {
            put_bytes_field(&mut buf, 3, version.as_bytes());
        }
        let mut summary = Vec::new();
        for value in &self.values {
            if let Some(encoded) = encode_value(value) {
                put_bytes_field(&mut summary, 1, &encoded);
            }
        }
        if !summary.is_empty() {
            put_bytes_field(&mut buf, 5, &summary);
        }
        buf
    }

    /// Decodes one `Event`, skipping fields this module does not use.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut event = Event {
            wall_time: 0.0,
            step: 0,
            file_version: None,
            values: vec![],
        };
        let mut decoder = Decoder::new(bytes);
        while let Some((number, field)) = decoder.next_field()? {
            match (number, field) {
                (1, Field::Fixed64(bits)) => event.wall_time = f64::from_bits(bits),
                (2, Field::Varint(v)) => event.step = v as i64,
                (3, Field::Bytes(b)) => event.file_version = Some(utf8(b, "Event.file_version")?),
                (5, Field::Bytes(b)) => decode_summary(b, &mut event.values)?,
                (1..=3 | 5, other) => return Err(wire_mismatch("Event", number, other)),
                _ => {}
            }
        }
        Ok(event)
    }
}

/// The scalars tagged `tag` in `events`, as `(step, value)` in file order.
pub fn scalars(events: &[Event], tag: &str) -> Vec<(i64, f32)> {
    events
        .iter()
        .filter_map(|e| e.scalar_value(tag).map(|v| (e.step, v)))
        .collect()
}

/// The texts tagged `tag` in `events`, as `(step, text)` in file order.
pub fn texts<'a>(events: &'a [Event], tag: &str) -> Vec<(i64, &'a str)> {
    events
        .iter()
        .filter_map(|e| e.text_value(tag).map(|t| (e.step, t)))
        .collect()
}

fn encode_value(value: &SummaryValue) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    if !value.tag.is_empty() {
        put_bytes_field(&mut buf, 1, value.tag.as_bytes());
    }
    match &value.data {
        // `simple_value` is in a oneof, so it is written even when it is 0.0.
        SummaryData::Scalar(x) => put_float_field(&mut buf, 2, *x),
        SummaryData::Text(text) => {
            let mut tensor = Vec::new();
            put_varint_field(&mut tensor, 1, DT_STRING);
            // An empty (but present) TensorShapeProto: a scalar string.
            put_bytes_field(&mut tensor, 2, &[]);
            put_bytes_field(&mut tensor, 8, text.as_bytes());
            put_bytes_field(&mut buf, 8, &tensor);
            let mut plugin_data = Vec::new();
            put_bytes_field(&mut plugin_data, 1, TEXT_PLUGIN.as_bytes());
            let mut metadata = Vec::new();
            put_bytes_field(&mut metadata, 1, &plugin_data);
            put_bytes_field(&mut buf, 9, &metadata);
        }
        SummaryData::Other { .. } => return None,
    }
    Some(buf)
}

fn decode_summary(bytes: &[u8], values: &mut Vec<SummaryValue>) -> Result<(), DecodeError> {
    let mut decoder = Decoder::new(bytes);
    while let Some((number, field)) = decoder.next_field()? {
        match (number, field) {
            (1, Field::Bytes(b)) => values.push(decode_value(b)?),
            (1, other) => return Err(wire_mismatch("Summary", number, other)),
            _ => {}
        }
    }
    Ok(())
}

fn decode_value(bytes: &[u8]) -> Result<SummaryValue, DecodeError> {
    let mut tag = String::new();
    let mut scalar = None;
    let mut strings = Vec::new();
    let mut dtype = 0;
    let mut plugin_name = None;
    let mut decoder = Decoder::new(bytes);
    while let Some((number, field)) = decoder.next_field()? {
        match (number, field) {
            (1, Field::Bytes(b)) => tag = utf8(b, "Value.tag")?,
            (2, Field::Fixed32(bits)) => scalar = Some(f32::from_bits(bits)),
            (8, Field::Bytes(b)) => (dtype, strings) = decode_string_tensor(b)?,
            (9, Field::Bytes(b)) => plugin_name = decode_plugin_name(b)?,
            (1 | 2 | 8 | 9, other) => return Err(wire_mismatch("Value", number, other)),
            _ => {}
        }
    }
    let data = match (scalar, plugin_name.as_deref(), dtype, strings.len()) {
        (Some(x), _, _, _) => SummaryData::Scalar(x),
        (None, Some(TEXT_PLUGIN), DT_STRING, 1) => {
            let text = strings.pop().expect("exactly one string");
            SummaryData::Text(String::from_utf8_lossy(text).into_owned())
        }
        _ => SummaryData::Other { plugin_name },
    };
    Ok(SummaryValue { tag, data })
}

/// `(dtype, string_val)` of a `TensorProto`; other dtypes' contents are ignored.
fn decode_string_tensor(bytes: &[u8]) -> Result<(u64, Vec<&[u8]>), DecodeError> {
    let mut dtype = 0;
    let mut strings = Vec::new();
    let mut decoder = Decoder::new(bytes);
    while let Some((number, field)) = decoder.next_field()? {
        match (number, field) {
            (1, Field::Varint(v)) => dtype = v,
            (8, Field::Bytes(b)) => strings.push(b),
            (1 | 8, other) => return Err(wire_mismatch("TensorProto", number, other)),
            _ => {}
        }
    }
    Ok((dtype, strings))
}

/// `SummaryMetadata.plugin_data.plugin_name`, if present.
fn decode_plugin_name(bytes: &[u8]) -> Result<Option<String>, DecodeError> {
    let mut name = None;
    let mut decoder = Decoder::new(bytes);
    while let Some((number, field)) = decoder.next_field()? {
        if let (1, Field::Bytes(plugin_data)) = (number, field) {
            let mut inner = Decoder::new(plugin_data);
            while let Some((number, field)) = inner.next_field()? {
                if let (1, Field::Bytes(b)) = (number, field) {
                    name = Some(utf8(b, "PluginData.plugin_name")?);
                }
            }
        }
    }
    Ok(name)
}

fn utf8(bytes: &[u8], what: &str) -> Result<String, DecodeError> {
    String::from_utf8(bytes.to_vec()).map_err(|e| DecodeError {
        pos: 0,
        reason: format!("{what} is not valid UTF-8 ({e})"),
    })
}

fn wire_mismatch(message: &str, number: u32, field: Field<'_>) -> DecodeError {
    DecodeError {
        pos: 0,
        reason: format!(
            "{message} field {number} has unexpected wire type {}",
            field.wire_name()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// test-infrastructure.md §8: Event{wall_time 1.0, step 2, scalar "loss" = 1.5}.
    const SCALAR_EVENT: [u8; 26] = [
        0x09, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xf0, 0x3f, 0x10, 0x02, 0x2a, 0x0d, 0x0a, 0x0b,
        0x0a, 0x04, 0x6c, 0x6f, 0x73, 0x73, 0x15, 0x00, 0x00, 0xc0, 0x3f,
    ];

    /// `Event(wall_time=1.0, step=3, summary=text_pb("note", "hi")).SerializeToString()` with
    /// `tensorboard.plugins.text.summary_v2.text_pb` from tensorboard 2.21.0.
    const TEXT_EVENT: [u8; 41] = [
        0x09, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xf0, 0x3f, 0x10, 0x03, 0x2a, 0x1c, 0x0a, 0x1a,
        0x0a, 0x04, 0x6e, 0x6f, 0x74, 0x65, 0x42, 0x08, 0x08, 0x07, 0x12, 0x00, 0x42, 0x02, 0x68,
        0x69, 0x4a, 0x08, 0x0a, 0x06, 0x0a, 0x04, 0x74, 0x65, 0x78, 0x74,
    ];

    /// `Event(wall_time=1.0, file_version="brain.Event:2").SerializeToString()`.
    const HEADER_EVENT: [u8; 24] = [
        0x09, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xf0, 0x3f, 0x1a, 0x0d, 0x62, 0x72, 0x61, 0x69,
        0x6e, 0x2e, 0x45, 0x76, 0x65, 0x6e, 0x74, 0x3a, 0x32,
    ];

    #[test]
    fn scalar_matches_reference_bytes() {
        let event = Event::scalar(1.0, 2, "loss", 1.5);
        assert_eq!(event.encode(), SCALAR_EVENT);
        assert_eq!(Event::decode(&SCALAR_EVENT), Ok(event));
    }

    #[test]
    fn text_matches_tensorboard_text_pb() {
        let event = Event::text(1.0, 3, "note", "hi");
        assert_eq!(event.encode(), TEXT_EVENT);
        assert_eq!(Event::decode(&TEXT_EVENT), Ok(event));
    }

    #[test]
    fn header_matches_reference_bytes() {
        let event = Event::header(1.0);
        assert_eq!(event.encode(), HEADER_EVENT);
        assert_eq!(Event::decode(&HEADER_EVENT), Ok(event));
    }

    #[test]
    fn edge_values_round_trip() {
        for (step, value) in [
            (0, 0.0),
            (-1, -2.5),
            (i64::MAX, f32::INFINITY),
            (7, f32::MIN),
        ] {
            let event = Event::scalar(1_700_000_000.25, step, "x vs samples", value);
            assert_eq!(Event::decode(&event.encode()), Ok(event));
        }
        let nan = Event::decode(&Event::scalar(1.0, 1, "loss", f32::NAN).encode());
        assert!(nan
            .expect("valid")
            .scalar_value("loss")
            .is_some_and(f32::is_nan));
        let unicode = Event::text(1.0, 0, "config/name", "Qwen3 ✓\n| a | b |");
        assert_eq!(Event::decode(&unicode.encode()), Ok(unicode));
    }

    #[test]
    fn unknown_fields_and_plugins_are_tolerated() {
        let mut bytes = SCALAR_EVENT.to_vec();
        // Event.source_metadata (field 10), which newer TensorFlow writers add.
        bytes.extend_from_slice(&[0x52, 0x02, 0x0a, 0x00]);
        assert_eq!(
            Event::decode(&bytes).map(|e| e.scalar_value("loss")),
            Ok(Some(1.5))
        );

        // A histogram value (field 5) decodes as `Other`.
        let value = [0x0a, 0x01, b'h', 0x2a, 0x00];
        let mut summary = Vec::new();
        put_bytes_field(&mut summary, 1, &value);
        let mut event = Vec::new();
        put_bytes_field(&mut event, 5, &summary);
        let decoded = Event::decode(&event).expect("valid");
        assert_eq!(
            decoded.values[0].data,
            SummaryData::Other { plugin_name: None }
        );
    }

    #[test]
    fn wrong_wire_type_is_an_error() {
        // wall_time encoded as a varint.
        let err = Event::decode(&[0x08, 0x01]).expect_err("wire type mismatch");
        assert!(err.reason.contains("Event field 1"), "{}", err.reason);
    }

    #[test]
    fn series_helpers() {
        let events = [
            Event::header(1.0),
            Event::scalar(2.0, 1, "loss", 3.0),
            Event::scalar(2.0, 1, "lr", 0.1),
            Event::text(2.0, 0, "config", "seed: 1"),
            Event::scalar(3.0, 2, "loss", 2.5),
        ];
        assert_eq!(scalars(&events, "loss"), [(1, 3.0), (2, 2.5)]);
        assert_eq!(texts(&events, "config"), [(0, "seed: 1")]);
        assert!(scalars(&events, "config").is_empty());
    }
}
