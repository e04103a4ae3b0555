"""What every georelay-dns command shares: failing with a message, reading the inventory,
building the tree, and turning AWS errors into one line that names the fix.

(What every georelay click CLI shares, -h, --version, exit 64, -i, is in cli_support.py.)"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, NoReturn

import click
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from georelay_dns.inputs import Inputs, load_inputs
from georelay_dns.operations import Refusal
from georelay_dns.operator_state import WEIGHT_MAX, OperatorState, StateError
from georelay_dns.route53 import AwsConfigError, ZoneError
from georelay_dns.tree import SELF_ZONE, Tree, TreeError, build_tree
from georelay_model import InventoryError, load_inventory
from georelay_model.inventory import InventoryReadError


def fail(message: str) -> NoReturn:
    click.echo(f"georelay-dns: {message}", err=True)
    sys.exit(1)


def read_inputs(inventory: str) -> Inputs:
    try:
        return load_inputs(load_inventory(inventory))
    except (InventoryError, InventoryReadError) as e:
        fail(str(e))


def tree_of(inputs: Inputs, zone_id: str = SELF_ZONE,
            state: OperatorState | None = None) -> Tree:
    try:
        return build_tree(inputs, zone_id, state)
    except TreeError as e:
        fail(str(e))


def aws(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except NoCredentialsError:
        fail("no AWS credentials: set AWS_PROFILE or the AWS_* variables (standard boto3 "
             "chain)")
    except (ZoneError, StateError, Refusal, AwsConfigError) as e:
        fail(str(e))
    except ClientError as e:
        err = e.response.get("Error", {})
        meta = e.response.get("ResponseMetadata", {})
        gave_up = ""
        if meta.get("MaxAttemptsReached"):
            gave_up = (f" (gave up after {int(meta.get('RetryAttempts', 0)) + 1} attempts; "
                       "AWS_MAX_ATTEMPTS or max_attempts in the AWS config file sets how many)")
        fail(f"Route53 {e.operation_name}: {err.get('Code')}: {err.get('Message')}{gave_up}")
    except BotoCoreError as e:
        fail(f"AWS: {e}")


def parse_weight(text: str, where: str) -> int:
    if not text.isdigit() or int(text) > WEIGHT_MAX:
        fail(f"{where}: {text!r} is not a weight. Fix: give a whole number from 0 to "
             f"{WEIGHT_MAX} (0 = standby: traffic only when every other proxy of its region "
             "is down)")
    return int(text)
