"""Ceph RADOS Gateway engine: the S3 engine on an RGW endpoint, with Quay's option names."""

from typing import Any, ClassVar

from django import forms

from .options import EngineOptionsForm, SecretField
from .s3 import S3CommonOptions, S3Engine, S3Settings


class RadosGWOptions(S3CommonOptions):
    engine_label = "Ceph Object Gateway (RADOS)"
    field_order = ["hostname", "port", "is_secure", "access_key", "secret_key", "bucket_name"]

    hostname = forms.CharField(help_text="Host name or IP address of the gateway.")
    port = forms.IntegerField(
        required=False, min_value=1, max_value=65535, help_text="Port; empty for 443 or 80."
    )
    is_secure = forms.BooleanField(
        required=False, initial=True, help_text="Connect with HTTPS (otherwise plain HTTP)."
    )
    access_key = forms.CharField(help_text="S3 access key of the gateway user.")
    secret_key = SecretField(help_text="S3 secret key of the gateway user.")
    bucket_name = forms.CharField(help_text="Name of the bucket that holds the blobs.")
    region_name = forms.CharField(
        required=False, initial="us-east-1", help_text="Region name the gateway expects."
    )

    def clean_hostname(self) -> str:
        hostname = str(self.cleaned_data["hostname"]).strip()
        if "/" in hostname or " " in hostname:
            raise forms.ValidationError("Give a host name only, without scheme or path.")
        return hostname

    def clean_bucket_name(self) -> str:
        bucket = str(self.cleaned_data["bucket_name"]).strip()
        if "/" in bucket or " " in bucket:
            raise forms.ValidationError("Give a bucket name, without slashes or spaces.")
        return bucket


class RadosGWEngine(S3Engine):
    """The S3 engine with path-style addressing on an endpoint built from host and port."""

    kind = "radosgw"
    options_form: ClassVar[type[EngineOptionsForm]] = RadosGWOptions

    @classmethod
    def settings_from(cls, options: dict[str, Any]) -> S3Settings:
        host = str(options["hostname"])
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"  # an IPv6 address
        port = options.get("port")
        scheme = "https" if options.get("is_secure", True) else "http"
        return S3Settings.common(
            options,
            bucket=options["bucket_name"],
            region=options.get("region_name") or "us-east-1",
            endpoint_url=f"{scheme}://{host}" + (f":{port}" if port else ""),
            access_key=options["access_key"],
            secret_key=options["secret_key"],
            session_token=None,
            # RGW serves path-style requests without any DNS setup for bucket host names.
            addressing_style="path",
            encrypt=False,
        )
