//! Names of the parameter enums: one list per enum gives its `ALL`, `name()`, `FromStr` (an
//! unknown name is an [`Error::Parameter`](crate::Error::Parameter) listing the known ones),
//! `Display`, and serde as that name — so the CLI's flags, the server's JSON, the page's
//! controls and the records spell every value one way.

/// `named!(Type, "what it is", { Variant => "name", … })` for a unit enum.
macro_rules! named {
    ($ty:ident, $what:literal, { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $ty {
            /// Every value, in the order of its names.
            pub const ALL: [$ty; <[&str]>::len(&[$($name),+])] = [$($ty::$variant),+];

            /// The name the CLI, the server and records use.
            pub fn name(self) -> &'static str {
                match self {
                    $($ty::$variant => $name),+
                }
            }
        }

        impl std::str::FromStr for $ty {
            type Err = $crate::Error;
            fn from_str(name: &str) -> $crate::Result<Self> {
                match name {
                    $($name => Ok($ty::$variant),)+
                    _ => Err($crate::Error::Parameter(format!(
                        concat!("unknown ", $what, " `{}`; available: {}"),
                        name,
                        [$($name),+].join(", ")
                    ))),
                }
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }

        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.name())
            }
        }

        #[cfg(feature = "schema")]
        impl utoipa::PartialSchema for $ty {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                $crate::names::string_schema(&[$($name),+])
            }
        }

        #[cfg(feature = "schema")]
        impl utoipa::ToSchema for $ty {}

        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let name = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                name.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

pub(crate) use named;

/// A string schema with the given values.
#[cfg(feature = "schema")]
pub(crate) fn string_schema(
    names: &[&str],
) -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(names.iter().copied()))
        .into()
}
