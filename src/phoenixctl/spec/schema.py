"""The JSON Schema of `phoenix.yaml` for editors: every form the models accept."""

from __future__ import annotations

from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema as cs

from .models import Spec

class _SpecJsonSchema(GenerateJsonSchema):
    """Mappings keyed by a constrained name (`images`, `secrets`) accept no other key, as the
    models do: pydantic emits only patternProperties for them."""

    def dict_schema(self, schema: cs.DictSchema) -> JsonSchemaValue:
        json_schema = super().dict_schema(schema)
        if "patternProperties" in json_schema and "additionalProperties" not in json_schema:
            json_schema["additionalProperties"] = False
        return json_schema


def json_schema() -> dict:
    """The JSON Schema of what a `phoenix.yaml` may say (every shorthand the models accept)."""
    schema = Spec.model_json_schema(mode="validation", schema_generator=_SpecJsonSchema)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "phoenix.yaml"
    return schema

