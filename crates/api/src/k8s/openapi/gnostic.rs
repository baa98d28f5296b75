//! The Swagger 2.0 document in the protobuf form kubectl asks for.
//!
//! client-go's `discovery.OpenAPISchema` fetches `/openapi/v2` with
//! `Accept: application/com.github.proto-openapi.spec.v2@v1.0+protobuf` and parses the body as
//! gnostic's `openapi.v2.Document` (google/gnostic-models, `openapiv2/OpenAPIv2.proto`). The
//! messages here are the part of that schema podnet's document uses, with the same field numbers;
//! [`document`] converts the JSON document to them, so the two forms cannot drift apart. A key it
//! does not know is an error, not silently dropped. As in gnostic, vendor extensions (`x-…`) are
//! `NamedAny`s whose value is YAML text (JSON here, which is YAML too).

// The messages are laid out as the .proto has them, as prost-build would generate them.
#![allow(clippy::large_enum_variant)]

use prost::Message;
use serde_json::{Map, Value};

/// A JSON document that does not fit the Swagger 2.0 shapes converted here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("OpenAPI v2 document, at {at}: {reason}")]
pub struct ShapeError {
    /// Where, as a JSON pointer.
    pub at: String,
    pub reason: String,
}

type Result<T> = std::result::Result<T, ShapeError>;

#[derive(Clone, PartialEq, Message)]
pub struct Document {
    #[prost(string, tag = "1")]
    pub swagger: String,
    #[prost(message, optional, tag = "2")]
    pub info: Option<Info>,
    #[prost(string, tag = "3")]
    pub host: String,
    #[prost(string, tag = "4")]
    pub base_path: String,
    #[prost(string, repeated, tag = "5")]
    pub schemes: Vec<String>,
    #[prost(string, repeated, tag = "6")]
    pub consumes: Vec<String>,
    #[prost(string, repeated, tag = "7")]
    pub produces: Vec<String>,
    #[prost(message, optional, tag = "8")]
    pub paths: Option<Paths>,
    #[prost(message, optional, tag = "9")]
    pub definitions: Option<Definitions>,
    #[prost(message, repeated, tag = "12")]
    pub security: Vec<SecurityRequirement>,
    #[prost(message, optional, tag = "13")]
    pub security_definitions: Option<SecurityDefinitions>,
    #[prost(message, repeated, tag = "16")]
    pub vendor_extension: Vec<NamedAny>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Info {
    #[prost(string, tag = "1")]
    pub title: String,
    #[prost(string, tag = "2")]
    pub version: String,
    #[prost(string, tag = "3")]
    pub description: String,
    #[prost(message, repeated, tag = "7")]
    pub vendor_extension: Vec<NamedAny>,
}

/// gnostic's `Any`: the value as YAML text (field 1, a `google.protobuf.Any`, is not used).
#[derive(Clone, PartialEq, Message)]
pub struct Any {
    #[prost(string, tag = "2")]
    pub yaml: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct NamedAny {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<Any>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Paths {
    #[prost(message, repeated, tag = "1")]
    pub vendor_extension: Vec<NamedAny>,
    #[prost(message, repeated, tag = "2")]
    pub path: Vec<NamedPathItem>,
}

#[derive(Clone, PartialEq, Message)]
pub struct NamedPathItem {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<PathItem>,
}

#[derive(Clone, PartialEq, Message)]
pub struct PathItem {
    #[prost(string, tag = "1")]
    pub r#ref: String,
    #[prost(message, optional, tag = "2")]
    pub get: Option<Operation>,
    #[prost(message, optional, tag = "3")]
    pub put: Option<Operation>,
    #[prost(message, optional, tag = "4")]
    pub post: Option<Operation>,
    #[prost(message, optional, tag = "5")]
    pub delete: Option<Operation>,
    #[prost(message, optional, tag = "6")]
    pub options: Option<Operation>,
    #[prost(message, optional, tag = "7")]
    pub head: Option<Operation>,
    #[prost(message, optional, tag = "8")]
    pub patch: Option<Operation>,
    #[prost(message, repeated, tag = "9")]
    pub parameters: Vec<ParametersItem>,
    #[prost(message, repeated, tag = "10")]
    pub vendor_extension: Vec<NamedAny>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Operation {
    #[prost(string, repeated, tag = "1")]
    pub tags: Vec<String>,
    #[prost(string, tag = "2")]
    pub summary: String,
    #[prost(string, tag = "3")]
    pub description: String,
    #[prost(string, tag = "5")]
    pub operation_id: String,
    #[prost(string, repeated, tag = "6")]
    pub produces: Vec<String>,
    #[prost(string, repeated, tag = "7")]
    pub consumes: Vec<String>,
    #[prost(message, repeated, tag = "8")]
    pub parameters: Vec<ParametersItem>,
    #[prost(message, optional, tag = "9")]
    pub responses: Option<Responses>,
    #[prost(string, repeated, tag = "10")]
    pub schemes: Vec<String>,
    #[prost(bool, tag = "11")]
    pub deprecated: bool,
    #[prost(message, repeated, tag = "13")]
    pub vendor_extension: Vec<NamedAny>,
}

#[derive(Clone, PartialEq, Message)]
pub struct ParametersItem {
    #[prost(oneof = "parameters_item::Oneof", tags = "1, 2")]
    pub oneof: Option<parameters_item::Oneof>,
}

pub mod parameters_item {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Oneof {
        #[prost(message, tag = "1")]
        Parameter(super::Parameter),
        #[prost(message, tag = "2")]
        JsonReference(super::JsonReference),
    }
}

#[derive(Clone, PartialEq, Message)]
pub struct JsonReference {
    #[prost(string, tag = "1")]
    pub r#ref: String,
    #[prost(string, tag = "2")]
    pub description: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct Parameter {
    #[prost(oneof = "parameter::Oneof", tags = "1, 2")]
    pub oneof: Option<parameter::Oneof>,
}

pub mod parameter {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Oneof {
        #[prost(message, tag = "1")]
        BodyParameter(super::BodyParameter),
        #[prost(message, tag = "2")]
        NonBodyParameter(super::NonBodyParameter),
    }
}

#[derive(Clone, PartialEq, Message)]
pub struct BodyParameter {
    #[prost(string, tag = "1")]
    pub description: String,
    #[prost(string, tag = "2")]
    pub name: String,
    #[prost(string, tag = "3")]
    pub r#in: String,
    #[prost(bool, tag = "4")]
    pub required: bool,
    #[prost(message, optional, tag = "5")]
    pub schema: Option<Schema>,
    #[prost(message, repeated, tag = "6")]
    pub vendor_extension: Vec<NamedAny>,
}

#[derive(Clone, PartialEq, Message)]
pub struct NonBodyParameter {
    #[prost(oneof = "non_body_parameter::Oneof", tags = "3, 4")]
    pub oneof: Option<non_body_parameter::Oneof>,
}

pub mod non_body_parameter {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Oneof {
        #[prost(message, tag = "3")]
        QueryParameterSubSchema(super::QueryParameterSubSchema),
        #[prost(message, tag = "4")]
        PathParameterSubSchema(super::PathParameterSubSchema),
    }
}

#[derive(Clone, PartialEq, Message)]
pub struct QueryParameterSubSchema {
    #[prost(bool, tag = "1")]
    pub required: bool,
    #[prost(string, tag = "2")]
    pub r#in: String,
    #[prost(string, tag = "3")]
    pub description: String,
    #[prost(string, tag = "4")]
    pub name: String,
    #[prost(string, tag = "6")]
    pub r#type: String,
    #[prost(string, tag = "7")]
    pub format: String,
    #[prost(bool, tag = "20")]
    pub unique_items: bool,
    #[prost(message, repeated, tag = "23")]
    pub vendor_extension: Vec<NamedAny>,
}

#[derive(Clone, PartialEq, Message)]
pub struct PathParameterSubSchema {
    #[prost(bool, tag = "1")]
    pub required: bool,
    #[prost(string, tag = "2")]
    pub r#in: String,
    #[prost(string, tag = "3")]
    pub description: String,
    #[prost(string, tag = "4")]
    pub name: String,
    #[prost(string, tag = "5")]
    pub r#type: String,
    #[prost(string, tag = "6")]
    pub format: String,
    #[prost(bool, tag = "19")]
    pub unique_items: bool,
    #[prost(message, repeated, tag = "22")]
    pub vendor_extension: Vec<NamedAny>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Responses {
    #[prost(message, repeated, tag = "1")]
    pub response_code: Vec<NamedResponseValue>,
    #[prost(message, repeated, tag = "2")]
    pub vendor_extension: Vec<NamedAny>,
}

#[derive(Clone, PartialEq, Message)]
pub struct NamedResponseValue {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<ResponseValue>,
}

#[derive(Clone, PartialEq, Message)]
pub struct ResponseValue {
    #[prost(oneof = "response_value::Oneof", tags = "1, 2")]
    pub oneof: Option<response_value::Oneof>,
}

pub mod response_value {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Oneof {
        #[prost(message, tag = "1")]
        Response(super::Response),
        #[prost(message, tag = "2")]
        JsonReference(super::JsonReference),
    }
}

#[derive(Clone, PartialEq, Message)]
pub struct Response {
    #[prost(string, tag = "1")]
    pub description: String,
    #[prost(message, optional, tag = "2")]
    pub schema: Option<SchemaItem>,
    #[prost(message, repeated, tag = "5")]
    pub vendor_extension: Vec<NamedAny>,
}

#[derive(Clone, PartialEq, Message)]
pub struct SchemaItem {
    #[prost(oneof = "schema_item::Oneof", tags = "1")]
    pub oneof: Option<schema_item::Oneof>,
}

pub mod schema_item {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Oneof {
        #[prost(message, tag = "1")]
        Schema(super::Schema),
    }
}

#[derive(Clone, PartialEq, Message)]
pub struct Schema {
    #[prost(string, tag = "1")]
    pub r#ref: String,
    #[prost(string, tag = "2")]
    pub format: String,
    #[prost(string, tag = "3")]
    pub title: String,
    #[prost(string, tag = "4")]
    pub description: String,
    #[prost(message, optional, tag = "5")]
    pub default: Option<Any>,
    #[prost(double, tag = "6")]
    pub multiple_of: f64,
    #[prost(double, tag = "7")]
    pub maximum: f64,
    #[prost(bool, tag = "8")]
    pub exclusive_maximum: bool,
    #[prost(double, tag = "9")]
    pub minimum: f64,
    #[prost(bool, tag = "10")]
    pub exclusive_minimum: bool,
    #[prost(int64, tag = "11")]
    pub max_length: i64,
    #[prost(int64, tag = "12")]
    pub min_length: i64,
    #[prost(string, tag = "13")]
    pub pattern: String,
    #[prost(int64, tag = "14")]
    pub max_items: i64,
    #[prost(int64, tag = "15")]
    pub min_items: i64,
    #[prost(bool, tag = "16")]
    pub unique_items: bool,
    #[prost(int64, tag = "17")]
    pub max_properties: i64,
    #[prost(int64, tag = "18")]
    pub min_properties: i64,
    #[prost(string, repeated, tag = "19")]
    pub required: Vec<String>,
    #[prost(message, repeated, tag = "20")]
    pub r#enum: Vec<Any>,
    #[prost(message, optional, boxed, tag = "21")]
    pub additional_properties: Option<Box<AdditionalPropertiesItem>>,
    #[prost(message, optional, tag = "22")]
    pub r#type: Option<TypeItem>,
    #[prost(message, optional, tag = "23")]
    pub items: Option<ItemsItem>,
    #[prost(message, repeated, tag = "24")]
    pub all_of: Vec<Schema>,
    #[prost(message, optional, tag = "25")]
    pub properties: Option<Properties>,
    #[prost(string, tag = "26")]
    pub discriminator: String,
    #[prost(bool, tag = "27")]
    pub read_only: bool,
    #[prost(message, optional, tag = "30")]
    pub example: Option<Any>,
    #[prost(message, repeated, tag = "31")]
    pub vendor_extension: Vec<NamedAny>,
}

#[derive(Clone, PartialEq, Message)]
pub struct AdditionalPropertiesItem {
    #[prost(oneof = "additional_properties_item::Oneof", tags = "1, 2")]
    pub oneof: Option<additional_properties_item::Oneof>,
}

pub mod additional_properties_item {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Oneof {
        #[prost(message, tag = "1")]
        Schema(super::Schema),
        #[prost(bool, tag = "2")]
        Boolean(bool),
    }
}

#[derive(Clone, PartialEq, Message)]
pub struct TypeItem {
    #[prost(string, repeated, tag = "1")]
    pub value: Vec<String>,
}

#[derive(Clone, PartialEq, Message)]
pub struct ItemsItem {
    #[prost(message, repeated, tag = "1")]
    pub schema: Vec<Schema>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Properties {
    #[prost(message, repeated, tag = "1")]
    pub additional_properties: Vec<NamedSchema>,
}

#[derive(Clone, PartialEq, Message)]
pub struct NamedSchema {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<Schema>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Definitions {
    #[prost(message, repeated, tag = "1")]
    pub additional_properties: Vec<NamedSchema>,
}

#[derive(Clone, PartialEq, Message)]
pub struct SecurityDefinitions {
    #[prost(message, repeated, tag = "1")]
    pub additional_properties: Vec<NamedSecurityDefinitionsItem>,
}

#[derive(Clone, PartialEq, Message)]
pub struct NamedSecurityDefinitionsItem {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<SecurityDefinitionsItem>,
}

#[derive(Clone, PartialEq, Message)]
pub struct SecurityDefinitionsItem {
    #[prost(oneof = "security_definitions_item::Oneof", tags = "2")]
    pub oneof: Option<security_definitions_item::Oneof>,
}

pub mod security_definitions_item {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Oneof {
        #[prost(message, tag = "2")]
        ApiKeySecurity(super::ApiKeySecurity),
    }
}

#[derive(Clone, PartialEq, Message)]
pub struct ApiKeySecurity {
    #[prost(string, tag = "1")]
    pub r#type: String,
    #[prost(string, tag = "2")]
    pub name: String,
    #[prost(string, tag = "3")]
    pub r#in: String,
    #[prost(string, tag = "4")]
    pub description: String,
    #[prost(message, repeated, tag = "5")]
    pub vendor_extension: Vec<NamedAny>,
}

#[derive(Clone, PartialEq, Message)]
pub struct SecurityRequirement {
    #[prost(message, repeated, tag = "1")]
    pub additional_properties: Vec<NamedStringArray>,
}

#[derive(Clone, PartialEq, Message)]
pub struct NamedStringArray {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<StringArray>,
}

#[derive(Clone, PartialEq, Message)]
pub struct StringArray {
    #[prost(string, repeated, tag = "1")]
    pub value: Vec<String>,
}

/// The protobuf bytes of the Swagger 2.0 document `doc`.
pub fn encode(doc: &Value) -> Result<Vec<u8>> {
    Ok(document(doc)?.encode_to_vec())
}

/// The gnostic form of the Swagger 2.0 document `doc`.
pub fn document(doc: &Value) -> Result<Document> {
    let o = Obj::new(doc, String::new())?;
    let vendor_extension = o.check(&[
        "swagger",
        "info",
        "host",
        "basePath",
        "schemes",
        "consumes",
        "produces",
        "paths",
        "definitions",
        "security",
        "securityDefinitions",
    ])?;
    Ok(Document {
        swagger: o.string("swagger")?,
        info: o.child("info").map(|i| info(&i?)).transpose()?,
        host: o.string("host")?,
        base_path: o.string("basePath")?,
        schemes: o.strings("schemes")?,
        consumes: o.strings("consumes")?,
        produces: o.strings("produces")?,
        paths: o.child("paths").map(|p| paths(&p?)).transpose()?,
        definitions: o
            .child("definitions")
            .map(|d| {
                Ok(Definitions {
                    additional_properties: named_schemas(&d?)?,
                })
            })
            .transpose()?,
        security: o.each("security", security_requirement)?,
        security_definitions: o
            .child("securityDefinitions")
            .map(|s| security_definitions(&s?))
            .transpose()?,
        vendor_extension,
    })
}

fn info(o: &Obj) -> Result<Info> {
    let vendor_extension = o.check(&["title", "version", "description"])?;
    Ok(Info {
        title: o.string("title")?,
        version: o.string("version")?,
        description: o.string("description")?,
        vendor_extension,
    })
}

fn paths(o: &Obj) -> Result<Paths> {
    let mut out = Paths::default();
    for (name, value) in o.map {
        if name.starts_with("x-") {
            out.vendor_extension.push(named_any(name, value));
        } else {
            let item = Obj::new(value, o.at_key(name))?;
            out.path.push(NamedPathItem {
                name: name.clone(),
                value: Some(path_item(&item)?),
            });
        }
    }
    Ok(out)
}

fn path_item(o: &Obj) -> Result<PathItem> {
    const METHODS: [&str; 7] = ["get", "put", "post", "delete", "options", "head", "patch"];
    let mut known = METHODS.to_vec();
    known.extend(["$ref", "parameters"]);
    let vendor_extension = o.check(&known)?;
    let op = |method: &str| o.child(method).map(|op| operation(&op?)).transpose();
    Ok(PathItem {
        r#ref: o.string("$ref")?,
        get: op("get")?,
        put: op("put")?,
        post: op("post")?,
        delete: op("delete")?,
        options: op("options")?,
        head: op("head")?,
        patch: op("patch")?,
        parameters: o.each("parameters", parameters_item)?,
        vendor_extension,
    })
}

fn operation(o: &Obj) -> Result<Operation> {
    let vendor_extension = o.check(&[
        "tags",
        "summary",
        "description",
        "operationId",
        "produces",
        "consumes",
        "parameters",
        "responses",
        "schemes",
        "deprecated",
    ])?;
    Ok(Operation {
        tags: o.strings("tags")?,
        summary: o.string("summary")?,
        description: o.string("description")?,
        operation_id: o.string("operationId")?,
        produces: o.strings("produces")?,
        consumes: o.strings("consumes")?,
        parameters: o.each("parameters", parameters_item)?,
        responses: o.child("responses").map(|r| responses(&r?)).transpose()?,
        schemes: o.strings("schemes")?,
        deprecated: o.boolean("deprecated")?,
        vendor_extension,
    })
}

fn parameters_item(o: &Obj) -> Result<ParametersItem> {
    use parameters_item::Oneof;
    let oneof = if o.map.contains_key("$ref") {
        Oneof::JsonReference(json_reference(o)?)
    } else {
        Oneof::Parameter(parameter(o)?)
    };
    Ok(ParametersItem { oneof: Some(oneof) })
}

fn json_reference(o: &Obj) -> Result<JsonReference> {
    o.check(&["$ref", "description"])?;
    Ok(JsonReference {
        r#ref: o.string("$ref")?,
        description: o.string("description")?,
    })
}

fn parameter(o: &Obj) -> Result<Parameter> {
    use non_body_parameter::Oneof as NonBody;
    use parameter::Oneof;
    const SIMPLE: &[&str] = &[
        "name",
        "in",
        "description",
        "required",
        "type",
        "format",
        "uniqueItems",
    ];
    let oneof = match o.string("in")?.as_str() {
        "body" => {
            let vendor_extension = o.check(&["name", "in", "description", "required", "schema"])?;
            Oneof::BodyParameter(BodyParameter {
                description: o.string("description")?,
                name: o.string("name")?,
                r#in: o.string("in")?,
                required: o.boolean("required")?,
                schema: o.child("schema").map(|s| schema(&s?)).transpose()?,
                vendor_extension,
            })
        }
        "query" => Oneof::NonBodyParameter(NonBodyParameter {
            oneof: Some(NonBody::QueryParameterSubSchema(QueryParameterSubSchema {
                vendor_extension: o.check(SIMPLE)?,
                required: o.boolean("required")?,
                r#in: o.string("in")?,
                description: o.string("description")?,
                name: o.string("name")?,
                r#type: o.string("type")?,
                format: o.string("format")?,
                unique_items: o.boolean("uniqueItems")?,
            })),
        }),
        "path" => Oneof::NonBodyParameter(NonBodyParameter {
            oneof: Some(NonBody::PathParameterSubSchema(PathParameterSubSchema {
                vendor_extension: o.check(SIMPLE)?,
                required: o.boolean("required")?,
                r#in: o.string("in")?,
                description: o.string("description")?,
                name: o.string("name")?,
                r#type: o.string("type")?,
                format: o.string("format")?,
                unique_items: o.boolean("uniqueItems")?,
            })),
        }),
        other => return Err(o.error(format!("parameters `in: {other}` are not supported"))),
    };
    Ok(Parameter { oneof: Some(oneof) })
}

fn responses(o: &Obj) -> Result<Responses> {
    use response_value::Oneof;
    let mut out = Responses::default();
    for (code, value) in o.map {
        if code.starts_with("x-") {
            out.vendor_extension.push(named_any(code, value));
            continue;
        }
        let r = Obj::new(value, o.at_key(code))?;
        let oneof = if r.map.contains_key("$ref") {
            Oneof::JsonReference(json_reference(&r)?)
        } else {
            Oneof::Response(response(&r)?)
        };
        out.response_code.push(NamedResponseValue {
            name: code.clone(),
            value: Some(ResponseValue { oneof: Some(oneof) }),
        });
    }
    Ok(out)
}

fn response(o: &Obj) -> Result<Response> {
    let vendor_extension = o.check(&["description", "schema"])?;
    let schema = o
        .child("schema")
        .map(|s| {
            Ok(SchemaItem {
                oneof: Some(schema_item::Oneof::Schema(schema(&s?)?)),
            })
        })
        .transpose()?;
    Ok(Response {
        description: o.string("description")?,
        schema,
        vendor_extension,
    })
}

/// The keys of a schema this converts; any other but an extension is an error.
const SCHEMA_KEYS: &[&str] = &[
    "$ref",
    "format",
    "title",
    "description",
    "default",
    "multipleOf",
    "maximum",
    "exclusiveMaximum",
    "minimum",
    "exclusiveMinimum",
    "maxLength",
    "minLength",
    "pattern",
    "maxItems",
    "minItems",
    "uniqueItems",
    "maxProperties",
    "minProperties",
    "required",
    "enum",
    "additionalProperties",
    "type",
    "items",
    "allOf",
    "properties",
    "discriminator",
    "readOnly",
    "example",
];

fn schema(o: &Obj) -> Result<Schema> {
    let vendor_extension = o.check(SCHEMA_KEYS)?;
    Ok(Schema {
        r#ref: o.string("$ref")?,
        format: o.string("format")?,
        title: o.string("title")?,
        description: o.string("description")?,
        default: o.map.get("default").map(any),
        multiple_of: o.number("multipleOf")?,
        maximum: o.number("maximum")?,
        exclusive_maximum: o.boolean("exclusiveMaximum")?,
        minimum: o.number("minimum")?,
        exclusive_minimum: o.boolean("exclusiveMinimum")?,
        max_length: o.integer("maxLength")?,
        min_length: o.integer("minLength")?,
        pattern: o.string("pattern")?,
        max_items: o.integer("maxItems")?,
        min_items: o.integer("minItems")?,
        unique_items: o.boolean("uniqueItems")?,
        max_properties: o.integer("maxProperties")?,
        min_properties: o.integer("minProperties")?,
        required: o.strings("required")?,
        r#enum: o.array("enum")?.iter().map(any).collect(),
        additional_properties: additional_properties(o)?.map(Box::new),
        r#type: type_item(o)?,
        items: items(o)?,
        all_of: o.each("allOf", schema)?,
        properties: o
            .child("properties")
            .map(|p| {
                Ok(Properties {
                    additional_properties: named_schemas(&p?)?,
                })
            })
            .transpose()?,
        discriminator: o.string("discriminator")?,
        read_only: o.boolean("readOnly")?,
        example: o.map.get("example").map(any),
        vendor_extension,
    })
}

fn additional_properties(o: &Obj) -> Result<Option<AdditionalPropertiesItem>> {
    use additional_properties_item::Oneof;
    let oneof = match o.map.get("additionalProperties") {
        None => return Ok(None),
        Some(Value::Bool(b)) => Oneof::Boolean(*b),
        Some(v) => Oneof::Schema(schema(&Obj::new(v, o.at_key("additionalProperties"))?)?),
    };
    Ok(Some(AdditionalPropertiesItem { oneof: Some(oneof) }))
}

fn type_item(o: &Obj) -> Result<Option<TypeItem>> {
    match o.map.get("type") {
        None => Ok(None),
        Some(Value::String(t)) => Ok(Some(TypeItem {
            value: vec![t.clone()],
        })),
        Some(_) => Ok(Some(TypeItem {
            value: o.strings("type")?,
        })),
    }
}

fn items(o: &Obj) -> Result<Option<ItemsItem>> {
    match o.map.get("items") {
        None => Ok(None),
        Some(Value::Array(_)) => Ok(Some(ItemsItem {
            schema: o.each("items", schema)?,
        })),
        Some(v) => Ok(Some(ItemsItem {
            schema: vec![schema(&Obj::new(v, o.at_key("items"))?)?],
        })),
    }
}

fn named_schemas(o: &Obj) -> Result<Vec<NamedSchema>> {
    o.map
        .iter()
        .map(|(name, value)| {
            Ok(NamedSchema {
                name: name.clone(),
                value: Some(schema(&Obj::new(value, o.at_key(name))?)?),
            })
        })
        .collect()
}

fn security_definitions(o: &Obj) -> Result<SecurityDefinitions> {
    use security_definitions_item::Oneof;
    let mut out = SecurityDefinitions::default();
    for (name, value) in o.map {
        let s = Obj::new(value, o.at_key(name))?;
        if s.string("type")? != "apiKey" {
            return Err(s.error("only apiKey security definitions are supported".to_owned()));
        }
        let vendor_extension = s.check(&["type", "name", "in", "description"])?;
        let item = ApiKeySecurity {
            r#type: s.string("type")?,
            name: s.string("name")?,
            r#in: s.string("in")?,
            description: s.string("description")?,
            vendor_extension,
        };
        out.additional_properties
            .push(NamedSecurityDefinitionsItem {
                name: name.clone(),
                value: Some(SecurityDefinitionsItem {
                    oneof: Some(Oneof::ApiKeySecurity(item)),
                }),
            });
    }
    Ok(out)
}

fn security_requirement(o: &Obj) -> Result<SecurityRequirement> {
    let mut out = SecurityRequirement::default();
    for name in o.map.keys() {
        out.additional_properties.push(NamedStringArray {
            name: name.clone(),
            value: Some(StringArray {
                value: o.strings(name)?,
            }),
        });
    }
    Ok(out)
}

/// A vendor extension: its value as YAML text (JSON is YAML).
fn named_any(name: &str, value: &Value) -> NamedAny {
    NamedAny {
        name: name.to_owned(),
        value: Some(any(value)),
    }
}

fn any(value: &Value) -> Any {
    Any {
        yaml: value.to_string(),
    }
}

/// A JSON object being converted, and where it is (a JSON pointer, for errors).
struct Obj<'a> {
    map: &'a Map<String, Value>,
    at: String,
}

impl<'a> Obj<'a> {
    fn new(v: &'a Value, at: String) -> Result<Self> {
        match v {
            Value::Object(map) => Ok(Obj { map, at }),
            _ => Err(ShapeError {
                at,
                reason: "not an object".to_owned(),
            }),
        }
    }

    fn error(&self, reason: String) -> ShapeError {
        ShapeError {
            at: self.at.clone(),
            reason,
        }
    }

    /// The JSON pointer of `key` in this object.
    fn at_key(&self, key: &str) -> String {
        format!("{}/{}", self.at, key.replace('~', "~0").replace('/', "~1"))
    }

    /// The vendor extensions; an error for a key neither in `known` nor an extension.
    fn check(&self, known: &[&str]) -> Result<Vec<NamedAny>> {
        let mut extensions = Vec::new();
        for (key, value) in self.map {
            if key.starts_with("x-") {
                extensions.push(named_any(key, value));
            } else if !known.contains(&key.as_str()) {
                return Err(self.error(format!("`{key}` is not supported here")));
            }
        }
        Ok(extensions)
    }

    fn child(&self, key: &str) -> Option<Result<Obj<'a>>> {
        self.map.get(key).map(|v| Obj::new(v, self.at_key(key)))
    }

    fn typed<T>(&self, key: &str, what: &str, get: impl Fn(&Value) -> Option<T>) -> Result<T>
    where
        T: Default,
    {
        match self.map.get(key) {
            None => Ok(T::default()),
            Some(v) => get(v).ok_or_else(|| self.error(format!("`{key}` is not {what}"))),
        }
    }

    fn string(&self, key: &str) -> Result<String> {
        self.typed(key, "a string", |v| v.as_str().map(str::to_owned))
    }

    fn boolean(&self, key: &str) -> Result<bool> {
        self.typed(key, "a boolean", Value::as_bool)
    }

    fn number(&self, key: &str) -> Result<f64> {
        self.typed(key, "a number", Value::as_f64)
    }

    fn integer(&self, key: &str) -> Result<i64> {
        self.typed(key, "an integer", Value::as_i64)
    }

    fn array(&self, key: &str) -> Result<&'a [Value]> {
        match self.map.get(key) {
            None => Ok(&[]),
            Some(Value::Array(items)) => Ok(items),
            Some(_) => Err(self.error(format!("`{key}` is not an array"))),
        }
    }

    fn strings(&self, key: &str) -> Result<Vec<String>> {
        self.array(key)?
            .iter()
            .map(|v| {
                v.as_str().map(str::to_owned).ok_or_else(|| {
                    self.error(format!("`{key}` holds a value that is not a string"))
                })
            })
            .collect()
    }

    /// `f` over each object of the array at `key`.
    fn each<T>(&self, key: &str, f: impl Fn(&Obj) -> Result<T>) -> Result<Vec<T>> {
        let at = self.at_key(key);
        self.array(key)?
            .iter()
            .enumerate()
            .map(|(i, v)| f(&Obj::new(v, format!("{at}/{i}"))?))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// The JSON a decoded document stands for: the inverse of [`document`], to check that
    /// nothing is lost on the way.
    mod back {
        use serde_json::{Map, Value, json};

        use super::super::*;

        fn put(m: &mut Map<String, Value>, key: &str, v: Value) {
            let empty = match &v {
                Value::String(s) => s.is_empty(),
                Value::Array(a) => a.is_empty(),
                Value::Bool(b) => !b,
                Value::Number(n) => n.as_f64() == Some(0.0),
                Value::Null => true,
                Value::Object(_) => false,
            };
            if !empty {
                m.insert(key.to_owned(), v);
            }
        }

        fn extensions(m: &mut Map<String, Value>, ext: &[NamedAny]) {
            for e in ext {
                m.insert(e.name.clone(), any(e.value.as_ref()));
            }
        }

        fn any(a: Option<&Any>) -> Value {
            a.and_then(|a| serde_json::from_str(&a.yaml).ok())
                .unwrap_or(Value::Null)
        }

        pub fn document(d: &Document) -> Value {
            let mut m = Map::new();
            put(&mut m, "swagger", json!(d.swagger));
            if let Some(i) = &d.info {
                let mut info = Map::new();
                put(&mut info, "title", json!(i.title));
                put(&mut info, "version", json!(i.version));
                put(&mut info, "description", json!(i.description));
                extensions(&mut info, &i.vendor_extension);
                m.insert("info".into(), Value::Object(info));
            }
            put(&mut m, "host", json!(d.host));
            put(&mut m, "basePath", json!(d.base_path));
            put(&mut m, "schemes", json!(d.schemes));
            put(&mut m, "consumes", json!(d.consumes));
            put(&mut m, "produces", json!(d.produces));
            if let Some(p) = &d.paths {
                let mut paths = Map::new();
                for item in &p.path {
                    paths.insert(item.name.clone(), path_item(item.value.as_ref().unwrap()));
                }
                extensions(&mut paths, &p.vendor_extension);
                m.insert("paths".into(), Value::Object(paths));
            }
            if let Some(defs) = &d.definitions {
                m.insert("definitions".into(), named(&defs.additional_properties));
            }
            if let Some(s) = &d.security_definitions {
                let mut out = Map::new();
                for item in &s.additional_properties {
                    let Some(security_definitions_item::Oneof::ApiKeySecurity(k)) =
                        item.value.as_ref().and_then(|v| v.oneof.as_ref())
                    else {
                        panic!("not an api key")
                    };
                    let mut o = Map::new();
                    put(&mut o, "type", json!(k.r#type));
                    put(&mut o, "name", json!(k.name));
                    put(&mut o, "in", json!(k.r#in));
                    put(&mut o, "description", json!(k.description));
                    out.insert(item.name.clone(), Value::Object(o));
                }
                m.insert("securityDefinitions".into(), Value::Object(out));
            }
            let security: Vec<Value> = d
                .security
                .iter()
                .map(|r| {
                    let mut o = Map::new();
                    for a in &r.additional_properties {
                        o.insert(a.name.clone(), json!(a.value.as_ref().unwrap().value));
                    }
                    Value::Object(o)
                })
                .collect();
            put(&mut m, "security", json!(security));
            extensions(&mut m, &d.vendor_extension);
            Value::Object(m)
        }

        fn path_item(p: &PathItem) -> Value {
            let mut m = Map::new();
            put(&mut m, "$ref", json!(p.r#ref));
            let ops = [
                ("get", &p.get),
                ("put", &p.put),
                ("post", &p.post),
                ("delete", &p.delete),
                ("options", &p.options),
                ("head", &p.head),
                ("patch", &p.patch),
            ];
            for (method, op) in ops {
                if let Some(op) = op {
                    m.insert(method.into(), operation(op));
                }
            }
            let params: Vec<Value> = p.parameters.iter().map(parameter).collect();
            put(&mut m, "parameters", json!(params));
            extensions(&mut m, &p.vendor_extension);
            Value::Object(m)
        }

        fn operation(o: &Operation) -> Value {
            let mut m = Map::new();
            put(&mut m, "tags", json!(o.tags));
            put(&mut m, "summary", json!(o.summary));
            put(&mut m, "description", json!(o.description));
            put(&mut m, "operationId", json!(o.operation_id));
            put(&mut m, "produces", json!(o.produces));
            put(&mut m, "consumes", json!(o.consumes));
            let params: Vec<Value> = o.parameters.iter().map(parameter).collect();
            put(&mut m, "parameters", json!(params));
            if let Some(r) = &o.responses {
                let mut out = Map::new();
                for code in &r.response_code {
                    let Some(response_value::Oneof::Response(resp)) =
                        code.value.as_ref().and_then(|v| v.oneof.as_ref())
                    else {
                        panic!("not a response")
                    };
                    let mut rm = Map::new();
                    put(&mut rm, "description", json!(resp.description));
                    if let Some(schema_item::Oneof::Schema(s)) =
                        resp.schema.as_ref().and_then(|s| s.oneof.as_ref())
                    {
                        rm.insert("schema".into(), schema(s));
                    }
                    out.insert(code.name.clone(), Value::Object(rm));
                }
                extensions(&mut out, &r.vendor_extension);
                m.insert("responses".into(), Value::Object(out));
            }
            put(&mut m, "schemes", json!(o.schemes));
            put(&mut m, "deprecated", json!(o.deprecated));
            extensions(&mut m, &o.vendor_extension);
            Value::Object(m)
        }

        fn parameter(p: &ParametersItem) -> Value {
            use non_body_parameter::Oneof as NonBody;
            let mut m = Map::new();
            match p.oneof.as_ref().unwrap() {
                parameters_item::Oneof::JsonReference(r) => {
                    put(&mut m, "$ref", json!(r.r#ref));
                    put(&mut m, "description", json!(r.description));
                }
                parameters_item::Oneof::Parameter(p) => match p.oneof.as_ref().unwrap() {
                    parameter::Oneof::BodyParameter(b) => {
                        put(&mut m, "name", json!(b.name));
                        put(&mut m, "in", json!(b.r#in));
                        put(&mut m, "description", json!(b.description));
                        m.insert("required".into(), json!(b.required));
                        m.insert("schema".into(), schema(b.schema.as_ref().unwrap()));
                        extensions(&mut m, &b.vendor_extension);
                    }
                    parameter::Oneof::NonBodyParameter(n) => {
                        let (required, location, description, name, ty, format, unique, ext) =
                            match n.oneof.as_ref().unwrap() {
                                NonBody::QueryParameterSubSchema(q) => (
                                    q.required,
                                    &q.r#in,
                                    &q.description,
                                    &q.name,
                                    &q.r#type,
                                    &q.format,
                                    q.unique_items,
                                    &q.vendor_extension,
                                ),
                                NonBody::PathParameterSubSchema(q) => (
                                    q.required,
                                    &q.r#in,
                                    &q.description,
                                    &q.name,
                                    &q.r#type,
                                    &q.format,
                                    q.unique_items,
                                    &q.vendor_extension,
                                ),
                            };
                        put(&mut m, "name", json!(name));
                        put(&mut m, "in", json!(location));
                        put(&mut m, "description", json!(description));
                        put(&mut m, "required", json!(required));
                        put(&mut m, "type", json!(ty));
                        put(&mut m, "format", json!(format));
                        put(&mut m, "uniqueItems", json!(unique));
                        extensions(&mut m, ext);
                    }
                },
            }
            Value::Object(m)
        }

        fn named(items: &[NamedSchema]) -> Value {
            let mut m = Map::new();
            for item in items {
                m.insert(item.name.clone(), schema(item.value.as_ref().unwrap()));
            }
            Value::Object(m)
        }

        pub fn schema(s: &Schema) -> Value {
            let mut m = Map::new();
            put(&mut m, "$ref", json!(s.r#ref));
            put(&mut m, "format", json!(s.format));
            put(&mut m, "title", json!(s.title));
            put(&mut m, "description", json!(s.description));
            if s.default.is_some() {
                m.insert("default".into(), any(s.default.as_ref()));
            }
            put(&mut m, "multipleOf", json!(s.multiple_of));
            put(&mut m, "maximum", json!(s.maximum));
            put(&mut m, "exclusiveMaximum", json!(s.exclusive_maximum));
            put(&mut m, "minimum", json!(s.minimum));
            put(&mut m, "exclusiveMinimum", json!(s.exclusive_minimum));
            put(&mut m, "maxLength", json!(s.max_length));
            put(&mut m, "minLength", json!(s.min_length));
            put(&mut m, "pattern", json!(s.pattern));
            put(&mut m, "maxItems", json!(s.max_items));
            put(&mut m, "minItems", json!(s.min_items));
            put(&mut m, "uniqueItems", json!(s.unique_items));
            put(&mut m, "maxProperties", json!(s.max_properties));
            put(&mut m, "minProperties", json!(s.min_properties));
            put(&mut m, "required", json!(s.required));
            let values: Vec<Value> = s.r#enum.iter().map(|a| any(Some(a))).collect();
            put(&mut m, "enum", json!(values));
            if let Some(a) = &s.additional_properties {
                let v = match a.oneof.as_ref().unwrap() {
                    additional_properties_item::Oneof::Boolean(b) => json!(b),
                    additional_properties_item::Oneof::Schema(s) => schema(s),
                };
                m.insert("additionalProperties".into(), v);
            }
            if let Some(t) = &s.r#type {
                let v = match t.value.as_slice() {
                    [one] => json!(one),
                    many => json!(many),
                };
                m.insert("type".into(), v);
            }
            if let Some(items) = &s.items {
                let v = match items.schema.as_slice() {
                    [one] => schema(one),
                    many => many.iter().map(schema).collect(),
                };
                m.insert("items".into(), v);
            }
            let all_of: Vec<Value> = s.all_of.iter().map(schema).collect();
            put(&mut m, "allOf", json!(all_of));
            if let Some(p) = &s.properties {
                m.insert("properties".into(), named(&p.additional_properties));
            }
            put(&mut m, "discriminator", json!(s.discriminator));
            put(&mut m, "readOnly", json!(s.read_only));
            if s.example.is_some() {
                m.insert("example".into(), any(s.example.as_ref()));
            }
            extensions(&mut m, &s.vendor_extension);
            Value::Object(m)
        }
    }

    fn small() -> Value {
        json!({
            "swagger": "2.0",
            "info": {"title": "t", "version": "1"},
            "paths": {
                "/api/v1/namespaces/{namespace}/pods/{name}": {
                    "parameters": [
                        {"name": "name", "in": "path", "description": "name of the Pod",
                         "required": true, "type": "string", "uniqueItems": true},
                    ],
                    "patch": {
                        "tags": ["core_v1"],
                        "operationId": "patchCoreV1NamespacedPod",
                        "consumes": ["application/strategic-merge-patch+json"],
                        "produces": ["application/json"],
                        "parameters": [
                            {"name": "body", "in": "body", "required": true,
                             "schema": {"$ref": "#/definitions/P"}},
                            {"name": "fieldValidation", "in": "query", "type": "string",
                             "uniqueItems": true},
                        ],
                        "responses": {
                            "200": {"description": "OK", "schema": {"$ref": "#/definitions/A"}},
                            "401": {"description": "Unauthorized"},
                        },
                        "x-kubernetes-action": "patch",
                        "x-kubernetes-group-version-kind": {"group": "", "kind": "Pod", "version": "v1"},
                    },
                },
            },
            "definitions": {
                "A": {
                    "description": "a \"quoted\"\nline\tand ünïcode",
                    "type": "object",
                    "required": ["b"],
                    "properties": {
                        "b": {"$ref": "#/definitions/B", "description": "the b"},
                        "c": {"type": "array", "items": {"type": "string"},
                              "x-kubernetes-list-type": "map",
                              "x-kubernetes-list-map-keys": ["port", "protocol"],
                              "x-kubernetes-patch-merge-key": "port",
                              "x-kubernetes-patch-strategy": "merge"},
                        "d": {"type": "object", "additionalProperties": {"type": "integer", "format": "int32"}},
                        "e": {"type": "object", "additionalProperties": false},
                        "f": {"type": "string", "enum": ["X", "Y"], "default": "X",
                              "minLength": 1, "maxLength": 3, "pattern": "^[XY]$"},
                        "g": {"type": "number", "minimum": 0.5, "maximum": 2.5, "exclusiveMaximum": true},
                    },
                    "x-kubernetes-group-version-kind": [{"group": "", "kind": "A", "version": "v1"}],
                },
                "B": {"type": "string", "format": "int-or-string"},
                "P": {"type": "object", "allOf": [{"$ref": "#/definitions/B"}]},
            },
            "securityDefinitions": {
                "BearerToken": {"type": "apiKey", "name": "authorization", "in": "header",
                                "description": "Bearer Token authentication"},
            },
            "security": [{"BearerToken": []}],
        })
    }

    #[test]
    fn a_small_document_decodes_to_what_was_encoded() {
        let doc = small();
        let bytes = encode(&doc).unwrap();
        let decoded = Document::decode(bytes.as_slice()).unwrap();
        assert_eq!(decoded, document(&doc).unwrap());
        assert_eq!(back::document(&decoded), doc);
        // Vendor extensions are YAML text that YAML (and JSON) parsers read back.
        let defs = decoded.definitions.unwrap();
        let a = defs.additional_properties[0].value.as_ref().unwrap();
        let gvk = &a.vendor_extension[0];
        assert_eq!(gvk.name, "x-kubernetes-group-version-kind");
        assert_eq!(
            gvk.value.as_ref().unwrap().yaml,
            r#"[{"group":"","kind":"A","version":"v1"}]"#
        );
    }

    /// Field numbers are the contract with the Go side: a few checked on the wire.
    #[test]
    fn field_numbers_on_the_wire() {
        let bytes = encode(&json!({"swagger": "2.0"})).unwrap();
        assert_eq!(bytes, [0x0a, 3, b'2', b'.', b'0']);
        // definitions (9) { additional_properties (1) { name (1) "A", value (2) {
        //   type (22) { value (1) "object" }, vendor_extension (31) { name (1), value (2) { yaml (2) } } } } }
        let bytes = encode(&json!({"definitions": {"A": {"type": "object", "x-a": 1}}})).unwrap();
        let ext = [&[0x0a, 3][..], b"x-a", &[0x12, 3, 0x12, 1, b'1']].concat();
        let type_item = [&[0x0a, 6][..], b"object"].concat();
        let schema = [
            &[0xb2, 0x01, type_item.len() as u8][..],
            &type_item,
            &[0xfa, 0x01, ext.len() as u8],
            &ext,
        ]
        .concat();
        let named = [&[0x0a, 1, b'A', 0x12, schema.len() as u8][..], &schema].concat();
        let definitions = [&[0x0a, named.len() as u8][..], &named].concat();
        let want = [&[0x4a, definitions.len() as u8][..], &definitions].concat();
        assert_eq!(bytes, want);
    }

    #[test]
    fn unknown_shapes_are_refused_with_where() {
        let err = encode(&json!({"definitions": {"io.k8s/A": {"oneOf": []}}})).unwrap_err();
        assert_eq!(err.at, "/definitions/io.k8s~1A");
        assert!(err.reason.contains("`oneOf`"), "{err}");
        let err = encode(&json!({"paths": {"/p": {"get": {"parameters": [{"in": "formData"}]}}}}))
            .unwrap_err();
        assert_eq!(err.at, "/paths/~1p/get/parameters/0");
        let err = encode(&json!({"definitions": {"A": {"required": "b"}}})).unwrap_err();
        assert!(
            err.to_string().contains("`required` is not an array"),
            "{err}"
        );
        assert!(encode(&json!([])).is_err());
    }

    #[test]
    fn the_served_document_decodes_to_its_json() {
        let served = super::super::v2().unwrap();
        let decoded = Document::decode(served.protobuf.as_slice()).unwrap();
        let json: Value = serde_json::from_slice(&served.json).unwrap();
        assert_eq!(difference(&back::document(&decoded), &json, ""), None);
    }

    /// Where `a` and `b` first differ, as a JSON pointer and the two values there.
    fn difference(a: &Value, b: &Value, at: &str) -> Option<String> {
        match (a, b) {
            (Value::Object(x), Value::Object(y)) => {
                for key in x.keys().chain(y.keys()) {
                    let here = format!("{at}/{key}");
                    match (x.get(key), y.get(key)) {
                        (Some(u), Some(v)) => {
                            if let Some(d) = difference(u, v, &here) {
                                return Some(d);
                            }
                        }
                        // proto3 drops zero scalars (`minimum: 0`), upstream's too.
                        (None, Some(n)) | (Some(n), None) if n.as_f64() == Some(0.0) => {}
                        (u, v) => return Some(format!("{here}: {u:?} vs {v:?}")),
                    }
                }
                None
            }
            (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
                .iter()
                .zip(y)
                .enumerate()
                .find_map(|(i, (u, v))| difference(u, v, &format!("{at}/{i}"))),
            // The protobuf keeps numbers (`maximum`, `minimum`) as doubles.
            (Value::Number(x), Value::Number(y)) if x.as_f64() == y.as_f64() => None,
            _ if a == b => None,
            _ => Some(format!("{at}: {a} vs {b}")),
        }
    }
}
