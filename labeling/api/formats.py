"""The API's JSON parser and renderer: DRF's, with two inputs they answered with a 500 answered.

- A body nested deeper than Python's recursion limit (about 1,000 levels; `[` 100,000 times is
  200 kB, under the body cap) made `json.load` raise RecursionError, which DRF's parser does not
  catch (only ValueError). Here it is a 400 parse error like any other malformed body.
- JSON may escape an unpaired surrogate ("\\ud800"), which is no Unicode text: echoed back in an
  error ("\\ud800" is not a valid choice) it made the UTF-8 encode of the answer fail. The answer
  is then written with ASCII escapes, the same JSON text to any client.

They are the API's defaults (settings.REST_FRAMEWORK) and the classes views name.
"""

from __future__ import annotations

from typing import Any

from rest_framework import parsers, renderers
from rest_framework.exceptions import ParseError


class JSONParser(parsers.JSONParser):
    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error - the body is nested too deeply.") from None


class JSONRenderer(renderers.JSONRenderer):
    def render(
        self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None
    ) -> bytes:
        try:
            return super().render(data, accepted_media_type, renderer_context)
        except UnicodeEncodeError:  # an unpaired surrogate from the request, echoed in an error
            return _AsciiJSONRenderer().render(data, accepted_media_type, renderer_context)


class _AsciiJSONRenderer(renderers.JSONRenderer):
    ensure_ascii = True
