"""moto's server, with one fix: TransactWriteItems without a whole-table copy.

moto 5.2.5 backs up a transaction by deep-copying every table it touches,
once per item, before it starts, so each transaction costs time in
proportion to the table's size. A soak of 10,000 webhook deliveries slows to
a few per second. This launcher replaces that backup with an undo log of the
items the transaction changes, restored in reverse order when the
transaction is cancelled: the same all-or-nothing outcome, the same errors.
Each item's condition is also evaluated once, where moto evaluates it twice.

Any other moto version runs unchanged, with a warning: the replacement
mirrors 5.2.5's code and is only applied to it.

Usage: python scripts/moto_server.py [moto_server's flags]
"""

import sys

import moto
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


if __name__ == "__main__":
    if moto.__version__ == PATCHED_VERSION:
        models.DynamoDBBackend.transact_write_items = transact_write_items
    else:
        print(
            f"moto_server.py: moto {moto.__version__} is not {PATCHED_VERSION}; "
            "running it unpatched (transactions copy whole tables)",
            file=sys.stderr,
        )
    sys.exit(main())
