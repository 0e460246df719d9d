"""The API's token endpoints (/api/v1/auth/): get a token with a password, list and revoke your own.

A new token comes from the password (here), the tokens page (a browser session) or
`manage.py create_token`, never from another token: a stolen token cannot mint itself a longer
life. Someone else's token is a 404, as everywhere in the API.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import authenticate
from django.utils import timezone
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import exceptions, generics, status
from rest_framework.parsers import FormParser
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import APIView

from . import lockout, selectors, services
from . import serializers as s
from .models import ApiToken

ERROR = OpenApiResponse(description="`detail` says why.")


def issued_data(issued: services.IssuedToken) -> dict[str, Any]:
    return {"token": issued.key, **s.ApiTokenSerializer(issued.token).data}


@extend_schema(
    tags=["auth"],
    request=s.TokenRequestSerializer,
    responses={
        200: s.IssuedTokenSerializer,
        400: ERROR,
        429: OpenApiResponse(
            description="Too many failed log-ins from this address or for this account (the"
            " right password is refused too); Retry-After says how many seconds to wait."
        ),
    },
    summary="Exchange a username and password for a new API token",
)
class TokenView(APIView):
    # No session authentication here, hence no CSRF check: the answer is a token in the body,
    # nothing is stored in the browser. Failed passwords count towards django-axes' lockout.
    authentication_classes = []
    permission_classes = [AllowAny]
    # The API's JSON parser (settings: a body nested too deep is a 400), and forms.
    parser_classes = [api_settings.DEFAULT_PARSER_CLASSES[0], FormParser]

    def post(self, request: Request) -> Response:
        serializer = s.TokenRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        user = authenticate(request=request, username=data["username"], password=data["password"])
        if getattr(request, "axes_locked_out", False):
            credentials = {"username": data["username"]}
            seconds = lockout.login_refused(request, credentials, surface="api token")
            raise exceptions.Throttled(
                wait=seconds,
                detail="Too many failed log-ins from this address or for this account.",
            )
        if user is None:
            raise exceptions.ValidationError(
                {"non_field_errors": ["Unable to log in with provided credentials."]}
            )
        issued = services.api_token_issue(
            user_id=user.pk,
            name=data["name"],
            now=timezone.now(),
            lifetime=services.token_lifetime(data.get("expires_in_days")),
        )
        return Response(issued_data(issued))


class TokenListView(generics.ListAPIView):
    serializer_class = s.ApiTokenSerializer
    queryset = ApiToken.objects.none()

    def get_queryset(self):
        return selectors.api_tokens_of(user_id=self.request.user.pk)

    @extend_schema(tags=["auth"], summary="Your API tokens, newest first (never their keys)")
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)


class TokenDetailView(APIView):
    @extend_schema(
        tags=["auth"],
        responses={204: None, 404: ERROR},
        summary="Revoke one of your API tokens (the one in use too); it stops working at once",
    )
    def delete(self, request: Request, token_id: int) -> Response:
        if not services.api_token_revoke(token_id=token_id, user_id=request.user.pk):
            raise exceptions.NotFound("No such token.")
        return Response(status=status.HTTP_204_NO_CONTENT)
