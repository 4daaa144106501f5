"""moto's server, faster in two ways; its answers are unchanged.

1. TransactWriteItems without a whole-table copy.

moto 5.2.5 backs up a transaction by deep-copying every table it touches,
once per item, before it starts, so each transaction costs time in
proportion to the table's size. A soak of 10,000 webhook deliveries slows to
a few per second. This launcher replaces that backup with an undo log of the
items the transaction changes, restored in reverse order when the
transaction is cancelled: the same all-or-nothing outcome, the same errors.
Each item's condition is also evaluated once, where moto evaluates it twice.

2. DynamoDB's data-plane answers as JSON directly. moto 5.2.5 serializes
every answer by walking the botocore model with a generic attribute picker:
a BatchGetItem of 100 small items spends 90% of its 64 ms there, a GetItem
most of its 5 ms. For the item operations, an answer made only of JSON's
own types (no bytes, no dates) is filtered by the output shape (members
the shape lacks are dropped, as the serializer drops them) and written
with json.dumps. Any other answer, and every error, goes the model's way.
An update expression is also parsed once per text, not twice per action:
the parse is pure and its tree is only read (the validator copies it).
MOTO_FAST_JSON_CHECK=1 serializes both ways and answers 500 when they
differ (TestMoto_TheFastAnswersAreTheModelsAnswers runs it).

Any other moto version runs unchanged, with a warning: the replacement
mirrors 5.2.5's code and is only applied to it.

Usage: python scripts/moto_server.py [moto_server's flags]
"""

import functools
import json
import os
import sys

import moto
from moto.core import responses as core_responses
from moto.dynamodb.parsing.expressions import UpdateExpressionParser
from moto.dynamodb import models
from moto.server import main

PATCHED_VERSION = "5.2.5"


def transact_write_items(self, transact_items):
    if len(transact_items) > 100:
        raise models.TooManyTransactionsException()

    # (table name, key, attributes before the change or None), in order.
    undo = []

    def rollback():
        for table_name, key, before in reversed(undo):
            if before is None:
                self.delete_item(table_name, key)
            else:
                self.put_item(table_name, before, overwrite=True)

    target_items = set()

    def check_unicity(table_name, key):
        item = (str(table_name), str(dict(sorted(key.items()))))
        if item in target_items:
            raise models.MultipleTransactionsException()
        target_items.add(item)

    errors = []  # [(Code, Message, Item), ...]
    for item in transact_items:
        original_item = None
        if len(list(item.keys())) > 1:
            raise models.TransactWriteSingleOpException

        try:
            op_type, op = next(iter(item.items()))
            if op_type not in {"ConditionCheck", "Put", "Delete", "Update"}:
                raise ValueError("Unsupported transaction operation")

            table_name = op["TableName"]
            condition_expression = op.get("ConditionExpression")
            names = op.get("ExpressionAttributeNames")
            values = op.get("ExpressionAttributeValues")

            if op_type == "Put":
                attrs = op["Item"]
                table = self.get_table(table_name)
                key = {table.hash_key_attr: attrs[table.hash_key_attr]}
                if table.range_key_attr is not None:
                    key[table.range_key_attr] = attrs[table.range_key_attr]
            else:
                key = op["Key"]

            check_unicity(table_name, key)

            current = self.get_item(table_name, key)
            if condition_expression is not None:
                condition_op = models.get_filter_expression(condition_expression, names, values)
                if not condition_op.expr(current):
                    if op.get("ReturnValuesOnConditionCheckFailure") == "ALL_OLD" and current:
                        original_item = current.to_json()["Attributes"]
                    raise models.ConditionalCheckFailed(item=original_item)

            if op_type != "ConditionCheck":
                before = models.copy.deepcopy(current.to_json()["Attributes"]) if current else None
                undo.append((table_name, key, before))

            # The condition was checked above against this same item, so
            # the write itself is unconditional: moto's methods would parse
            # and check it a second time.
            if op_type == "Put":
                self.put_item(table_name, op["Item"])
            elif op_type == "Delete":
                self.delete_item(table_name, key)
            elif op_type == "Update":
                self.update_item(
                    table_name,
                    key,
                    update_expression=op["UpdateExpression"],
                    expression_attribute_names=names,
                    expression_attribute_values=values,
                )
            errors.append((None, None, None))
        except (models.MultipleTransactionsException, models.MockValidationException):
            rollback()
            raise
        except models.ConditionalCheckFailed as e:
            errors.append(("ConditionalCheckFailed", str(e.message), original_item))
        except Exception as e:  # noqa: E722, as moto does: every cause is reported
            errors.append((type(e).__name__, str(e), original_item))

    if any(code is not None for code, _, _ in errors):
        rollback()
        raise models.TransactionCanceledException(errors)


# The operations whose answers are items and capacities: JSON's types only.
FAST_JSON_OPERATIONS = {
    "GetItem", "BatchGetItem", "Query", "Scan", "PutItem", "UpdateItem", "DeleteItem",
    "BatchWriteItem", "TransactWriteItems", "TransactGetItems",
}


class _ModelWay(Exception):
    """The answer holds a value JSON cannot carry as is: the model's way."""


def _by_shape(value, shape):
    kind = shape.type_name
    if kind == "structure":
        if not isinstance(value, dict):
            raise _ModelWay
        return {k: _by_shape(v, shape.members[k]) for k, v in value.items() if v is not None and k in shape.members}
    if kind == "map":
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise _ModelWay
        return {k: _by_shape(v, shape.value) for k, v in value.items()}
    if kind == "list":
        if not isinstance(value, list):
            raise _ModelWay
        return [_by_shape(v, shape.member) for v in value]
    if kind == "string" and isinstance(value, str):
        return value
    if kind == "boolean" and isinstance(value, bool):
        return value
    if kind in ("integer", "long") and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind in ("double", "float") and isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    raise _ModelWay


_model_way = core_responses.ActionResult.execute_result


def execute_result(self, context):
    operation = context.operation_model
    if (
        context.service_model.service_name != "dynamodb"
        or operation.name not in FAST_JSON_OPERATIONS
        or isinstance(self.result, Exception)
        or operation.output_shape is None
    ):
        return _model_way(self, context)
    try:
        body = json.dumps(_by_shape(self.result, operation.output_shape))
    except _ModelWay:
        return _model_way(self, context)
    fast = (200, {"Content-Type": "application/x-amz-json-1.0"}, body)
    if os.environ.get("MOTO_FAST_JSON_CHECK") == "1":
        status, headers, model_body = _model_way(self, context)
        if (status, headers) != fast[:2] or json.loads(model_body) != json.loads(body):
            raise RuntimeError(f"moto_server.py: {operation.name}'s fast answer differs: {body} against the model's {model_body}")
    return fast


if __name__ == "__main__":
    if moto.__version__ == PATCHED_VERSION:
        models.DynamoDBBackend.transact_write_items = transact_write_items
        core_responses.ActionResult.execute_result = execute_result
        UpdateExpressionParser.make = staticmethod(functools.lru_cache(maxsize=1024)(UpdateExpressionParser.make))
    else:
        print(
            f"moto_server.py: moto {moto.__version__} is not {PATCHED_VERSION}; "
            "running it unpatched (transactions copy whole tables)",
            file=sys.stderr,
        )
    sys.exit(main())
