"""A real S3 server for tests: moto in server mode on 127.0.0.1, with authentication on.

moto checks signatures only once IAM is in use: the first few requests are
unauthenticated (INITIAL_NO_AUTH_ACTION_COUNT) and create a user with an access
key and an allow-all policy; every later request must be signed with that key,
or with temporary credentials of a role assumed through STS, whose session token
moto checks on every request too.
"""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import boto3

from bench.procs import die_with_parent
from tests.servers import rclone_conf
from tests.servers.net import free_port, port_open, wait_until

# create_user, create_access_key, create_policy, attach_user_policy
_SETUP_ACTIONS = 4
_ROLE = "objmount-test-role"


class MotoS3Server:
    """moto_server on a free loopback port; `access_key`/`secret_key` are valid credentials."""

    def __init__(self, log_path: Path) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.region = "us-east-1"
        self.access_key = self.secret_key = self._policy_arn = ""
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> "MotoS3Server":
        env = dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT=str(_SETUP_ACTIONS))
        moto = Path(sys.executable).with_name("moto_server")
        with open(self.log_path, "wb") as log:
            self._proc = subprocess.Popen(
                [str(moto), "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                preexec_fn=die_with_parent,  # a killed test run leaves no server
            )
        wait_until(lambda: port_open(self.port), 30, "moto S3 server")
        iam = boto3.client(
            "iam", endpoint_url=self.endpoint, region_name=self.region,
            aws_access_key_id="setup", aws_secret_access_key="setup",
        )
        iam.create_user(UserName="objmount-test")
        key = iam.create_access_key(UserName="objmount-test")["AccessKey"]
        policy = iam.create_policy(
            PolicyName="allow-all",
            PolicyDocument=json.dumps({
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
            }),
        )
        self._policy_arn = policy["Policy"]["Arn"]
        iam.attach_user_policy(UserName="objmount-test", PolicyArn=self._policy_arn)
        self.access_key, self.secret_key = key["AccessKeyId"], key["SecretAccessKey"]
        return self

    def temporary_credentials(self) -> tuple[str, str, str]:
        """Assume an allow-all role through STS; return its access key, secret key and
        session token (what AWS_* variables hold for env_auth)."""
        session = boto3.session.Session(
            aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key,
            region_name=self.region,
        )
        iam = session.client("iam", endpoint_url=self.endpoint)
        try:
            role = iam.get_role(RoleName=_ROLE)["Role"]
        except iam.exceptions.NoSuchEntityException:
            trust = {"Version": "2012-10-17", "Statement": [
                {"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"}]}
            role = iam.create_role(RoleName=_ROLE,
                                   AssumeRolePolicyDocument=json.dumps(trust))["Role"]
            iam.attach_role_policy(RoleName=_ROLE, PolicyArn=self._policy_arn)
        sts = session.client("sts", endpoint_url=self.endpoint)
        granted = sts.assume_role(RoleArn=role["Arn"], RoleSessionName="objmount-test")
        credentials = granted["Credentials"]
        return (credentials["AccessKeyId"], credentials["SecretAccessKey"],
                credentials["SessionToken"])

    def stop(self) -> None:
        if self._proc and self._proc.poll() is None:
            os.killpg(self._proc.pid, signal.SIGTERM)
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self._proc.pid, signal.SIGKILL)
                self._proc.wait()

    def client(self, secret_key: str | None = None):
        """Return a boto3 S3 client signed with the test user's key (or another secret)."""
        return boto3.client(
            "s3", endpoint_url=self.endpoint, region_name=self.region,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=secret_key or self.secret_key,
        )

    def rclone_section(self, name: str, **overrides: str) -> str:
        """Return an rclone.conf section for this server, as rclone users write it."""
        values = {
            "type": "s3", "provider": "Other", "access_key_id": self.access_key,
            "secret_access_key": self.secret_key, "endpoint": self.endpoint,
            "region": self.region, **overrides,
        }
        return rclone_conf.section(name, values)
