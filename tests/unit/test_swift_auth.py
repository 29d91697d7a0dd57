"""Which auth method and parameters each rclone swift option set and openrc environment gives."""

import pytest
from keystoneauth1.identity import v3

from objmount import log as logsetup
from objmount.backends import Timeouts
from objmount.backends.keystone import (
    APP_CREDENTIAL,
    PASSWORD,
    TOKEN,
    V1,
    SwiftAuth,
    swift_auth,
)
from objmount.config import Remote
from objmount.errors import ConfigError

KEYSTONE = "https://chi.tacc.chameleoncloud.org:5000/v3"


def auth(env: dict[str, str] | None = None, **options: str) -> SwiftAuth:
    return swift_auth(Remote("r", "swift", {"type": "swift", **options}), env or {})


def openrc(**variables: str) -> SwiftAuth:
    """What `:swift:container` (env_auth) makes of these OS_* variables."""
    return auth(variables, env_auth="true")


def test_the_tutorial_remote_is_an_application_credential_by_id() -> None:
    a = auth(user_id="u1", application_credential_id="c1", application_credential_secret="s1",
             auth=KEYSTONE, region="CHI@TACC")
    assert a.method == APP_CREDENTIAL
    assert a.params == {"application_credential_id": "c1", "application_credential_secret": "s1"}
    assert (a.auth_url, a.region, a.interface) == (KEYSTONE, "CHI@TACC", "public")
    plugin = a.plugin()
    assert isinstance(plugin, v3.ApplicationCredential)
    assert plugin.auth_url == KEYSTONE
    assert plugin.auth_methods[0].application_credential_id == "c1"


def test_an_application_credential_by_name_needs_its_user() -> None:
    a = auth(application_credential_name="n", application_credential_secret="s", user_id="u1",
             auth=KEYSTONE)
    assert a.params == {"application_credential_name": "n", "application_credential_secret": "s",
                        "user_id": "u1"}
    a = auth(application_credential_name="n", application_credential_secret="s", user="alice",
             domain="chameleon", auth=KEYSTONE)
    assert a.params["username"] == "alice"
    assert a.params["user_domain_name"] == "chameleon"
    with pytest.raises(ConfigError, match="needs user_id, or user and domain"):
        auth(application_credential_name="n", application_credential_secret="s", auth=KEYSTONE)


def test_an_application_credential_without_secret_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="application_credential_secret"):
        auth(application_credential_id="c1", auth=KEYSTONE)


def test_v3_password_with_names_and_domains() -> None:
    a = auth(user="alice", key="pw", domain="Default", tenant="proj", tenant_domain="other",
             auth=KEYSTONE)
    assert a.method == PASSWORD
    assert a.params == {"password": "pw", "username": "alice", "user_domain_name": "Default",
                        "project_name": "proj", "project_domain_name": "other"}
    plugin = a.plugin()
    assert isinstance(plugin, v3.Password)
    assert plugin.project_name == "proj"


def test_v3_password_project_domain_defaults_to_the_user_domain() -> None:
    a = auth(user="alice", key="pw", domain="dom", tenant="proj", auth=KEYSTONE)
    assert a.params["project_domain_name"] == "dom"


def test_v3_password_by_ids_and_without_any_domain() -> None:
    a = auth(user_id="u1", key="pw", tenant_id="p1", auth=KEYSTONE)
    assert a.params == {"password": "pw", "user_id": "u1", "project_id": "p1"}
    a = auth(user="alice", key="pw", tenant="proj", auth=KEYSTONE)
    assert a.params["user_domain_id"] == a.params["project_domain_id"] == "default"


def test_v3_password_without_a_project_is_scoped_by_keystone() -> None:
    a = auth(user="alice", key="pw", domain="Default", auth=KEYSTONE)
    assert "project_id" not in a.params
    assert "project_name" not in a.params


@pytest.mark.parametrize(
    ("url", "version_option", "method"),
    [
        ("http://swift:8080/auth/v1.0", "", V1),
        ("http://swift:8080/auth/v1.0", "3", PASSWORD),
        ("https://keystone:5000/v3", "", PASSWORD),
        ("https://keystone:5000/v3/", "", PASSWORD),
        ("https://swift.example.org/auth", "", V1),  # unversioned: rclone's default
        ("https://keystone:5000", "3", PASSWORD),
        ("https://keystone:5000/v3", "1", V1),
    ],
)
def test_user_and_key_pick_v1_or_v3_by_auth_version_then_url(
    url: str, version_option: str, method: str
) -> None:
    assert auth(user="u", key="k", auth=url, auth_version=version_option).method == method


def test_v1_keeps_user_key_and_url_as_given() -> None:
    a = auth(user="test:tester", key="testing", auth="http://swift:8080/auth/v1.0")
    assert (a.method, a.auth_url) == (V1, "http://swift:8080/auth/v1.0")
    assert a.params == {"user": "test:tester", "key": "testing"}
    with pytest.raises(ValueError, match="does not use Keystone"):
        a.plugin()


def test_unversioned_keystone_urls_get_v3_appended() -> None:
    a = auth(application_credential_id="c", application_credential_secret="s",
             auth="https://cloud.example.org/identity/")
    assert a.auth_url == "https://cloud.example.org/identity/v3"
    a = auth(user="u", key="k", domain="d", auth="https://keystone:5000")
    assert (a.method, a.auth_url) == (PASSWORD, "https://keystone:5000/v3")


def test_keystone_v2_is_refused_with_a_reason() -> None:
    with pytest.raises(ConfigError, match=r"v2\.0"):
        auth(user="u", key="k", auth="https://keystone:5000/v2.0", tenant="t")
    with pytest.raises(ConfigError, match=r"v2\.0"):
        auth(user="u", key="k", auth="https://keystone:5000/v3", auth_version="2")


def test_a_pre_issued_token_alone_is_the_token_method() -> None:
    a = auth(storage_url="https://swift/v1/AUTH_p", auth_token="tok")
    assert (a.method, a.storage_url, a.auth_token) == (TOKEN, "https://swift/v1/AUTH_p", "tok")
    with pytest.raises(ConfigError, match="no Swift credentials"):
        auth(auth_token="tok")


def test_credentials_with_storage_url_and_token_keep_both_for_renewal() -> None:
    a = auth(application_credential_id="c", application_credential_secret="s", auth=KEYSTONE,
             storage_url="https://swift/v1/AUTH_p", auth_token="tok")
    assert a.method == APP_CREDENTIAL
    assert (a.storage_url, a.auth_token) == ("https://swift/v1/AUTH_p", "tok")


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({}, "no Swift credentials"),
        ({"user": "u"}, "no key"),
        ({"application_credential_id": "c", "application_credential_secret": "s"}, "no auth URL"),
        ({"user": "u", "key": "k", "auth": KEYSTONE, "endpoint_type": "private"},
         "endpoint_type"),
        ({"user": "u", "key": "k", "auth": KEYSTONE, "auth_version": "4"}, "auth_version"),
    ],
)
def test_unusable_option_sets_are_config_errors(options: dict[str, str], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        auth(**options)


@pytest.mark.parametrize(
    ("value", "interface"),
    [("", "public"), ("public", "public"), ("internal", "internal"), ("internalURL", "internal"),
     ("admin", "admin"), ("adminURL", "admin")],
)
def test_endpoint_type_names_the_catalog_interface(value: str, interface: str) -> None:
    a = auth(user="u", key="k", auth=KEYSTONE, endpoint_type=value)
    assert a.interface == interface


def test_an_application_credential_openrc() -> None:
    a = openrc(OS_AUTH_URL=KEYSTONE, OS_AUTH_TYPE="v3applicationcredential",
               OS_APPLICATION_CREDENTIAL_ID="c1", OS_APPLICATION_CREDENTIAL_SECRET="s1",
               OS_REGION_NAME="CHI@TACC", OS_INTERFACE="public", OS_IDENTITY_API_VERSION="3")
    assert a.method == APP_CREDENTIAL
    assert a.params == {"application_credential_id": "c1", "application_credential_secret": "s1"}
    assert (a.auth_url, a.region, a.interface) == (KEYSTONE, "CHI@TACC", "public")


def test_an_application_credential_openrc_by_name() -> None:
    a = openrc(OS_AUTH_URL=KEYSTONE, OS_AUTH_TYPE="v3applicationcredential",
               OS_APPLICATION_CREDENTIAL_NAME="n", OS_APPLICATION_CREDENTIAL_SECRET="s",
               OS_USERNAME="alice", OS_USER_DOMAIN_NAME="Default")
    assert a.params == {"application_credential_name": "n", "application_credential_secret": "s",
                        "username": "alice", "user_domain_name": "Default"}


def test_a_password_openrc_as_horizon_writes_it() -> None:
    a = openrc(OS_AUTH_URL=KEYSTONE, OS_USERNAME="alice", OS_PASSWORD="pw",
               OS_PROJECT_ID="p1", OS_PROJECT_NAME="proj", OS_USER_DOMAIN_NAME="Default",
               OS_PROJECT_DOMAIN_ID="default", OS_REGION_NAME="RegionOne",
               OS_INTERFACE="internal", OS_IDENTITY_API_VERSION="3")
    assert a.method == PASSWORD
    assert a.params == {"password": "pw", "username": "alice", "user_domain_name": "Default",
                        "project_id": "p1"}
    assert (a.region, a.interface) == ("RegionOne", "internal")


def test_an_openrc_with_a_project_name_and_domain_id() -> None:
    a = openrc(OS_AUTH_URL=KEYSTONE, OS_USERNAME="alice", OS_PASSWORD="pw",
               OS_PROJECT_NAME="proj", OS_PROJECT_DOMAIN_ID="d1", OS_USER_DOMAIN_ID="d1")
    assert a.params == {"password": "pw", "username": "alice", "user_domain_id": "d1",
                        "project_name": "proj", "project_domain_id": "d1"}


def test_old_style_tenant_variables_and_endpoint_type() -> None:
    a = openrc(OS_AUTH_URL=KEYSTONE, OS_USERNAME="alice", OS_PASSWORD="pw",
               OS_TENANT_ID="t1", OS_ENDPOINT_TYPE="internalURL")
    assert a.params["project_id"] == "t1"
    assert a.interface == "internal"


def test_a_token_openrc() -> None:
    a = openrc(OS_STORAGE_URL="https://swift/v1/AUTH_p", OS_AUTH_TOKEN="tok")
    assert (a.method, a.storage_url, a.auth_token) == (TOKEN, "https://swift/v1/AUTH_p", "tok")


def test_tempauth_variables() -> None:
    a = openrc(ST_AUTH="http://swift:8080/auth/v1.0", ST_USER="test:tester", ST_KEY="testing")
    assert (a.method, a.params) == (V1, {"user": "test:tester", "key": "testing"})


def test_the_remote_options_win_over_the_environment() -> None:
    a = auth({"OS_AUTH_URL": "https://other/v3", "OS_REGION_NAME": "B",
              "OS_APPLICATION_CREDENTIAL_ID": "env-id",
              "OS_APPLICATION_CREDENTIAL_SECRET": "env-secret"},
             env_auth="true", auth=KEYSTONE, region="A", application_credential_id="c1",
             application_credential_secret="s1")
    assert (a.auth_url, a.region) == (KEYSTONE, "A")
    assert a.params["application_credential_id"] == "c1"


def test_without_env_auth_the_environment_is_ignored() -> None:
    with pytest.raises(ConfigError, match="no Swift credentials"):
        auth({"OS_AUTH_URL": KEYSTONE, "OS_APPLICATION_CREDENTIAL_ID": "c",
              "OS_APPLICATION_CREDENTIAL_SECRET": "s"})


def test_an_unsupported_os_auth_type_is_named() -> None:
    with pytest.raises(ConfigError, match="v3oidcpassword"):
        openrc(OS_AUTH_URL=KEYSTONE, OS_AUTH_TYPE="v3oidcpassword", OS_USERNAME="a",
               OS_PASSWORD="p")


def test_os_auth_type_chooses_between_two_credentials() -> None:
    both = {"OS_AUTH_URL": KEYSTONE, "OS_USERNAME": "alice", "OS_PASSWORD": "pw",
            "OS_APPLICATION_CREDENTIAL_ID": "c", "OS_APPLICATION_CREDENTIAL_SECRET": "s"}
    assert openrc(**both).method == APP_CREDENTIAL
    assert openrc(**both, OS_AUTH_TYPE="password").method == PASSWORD


def test_an_empty_environment_says_what_to_source() -> None:
    with pytest.raises(ConfigError, match=r"OS_\* variables.*no Swift credentials"):
        openrc()


def test_secrets_from_the_environment_are_redacted_and_never_in_repr() -> None:
    a = openrc(OS_AUTH_URL=KEYSTONE, OS_APPLICATION_CREDENTIAL_ID="c1",
               OS_APPLICATION_CREDENTIAL_SECRET="env-secret-123", OS_AUTH_TOKEN="env-token-456")
    assert logsetup.redact("x env-secret-123 env-token-456") == "x *** ***"
    assert "env-secret-123" not in repr(a)
    assert "env-token-456" not in repr(a)


@pytest.mark.parametrize("option", ["storage_url", "auth"])
def test_a_backend_describes_its_urls_without_userinfo_or_query(option: str) -> None:
    from objmount.backends.swift import SwiftBackend

    options = {"user": "u", "key": "k", "auth": "https://keystone/v3",
               option: "https://name:pw@swift.example/v1/AUTH_p?temp_url_sig=abcd1234"}
    if option == "storage_url":
        options["auth_token"] = "tok"
    backend = SwiftBackend(Remote("r", "swift", {"type": "swift", **options}), "c", Timeouts(),
                           env={})
    described = backend.describe()
    assert "swift.example/v1/AUTH_p" in described
    assert "pw" not in described and "abcd1234" not in described
