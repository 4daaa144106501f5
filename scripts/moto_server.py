"""moto's server, faster in five ways; its answers are unchanged.

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

3. Update expressions validated with less overhead, the same checks.
moto validates each update action by ten walks over its parsed expression,
after a deepcopy of it: most of a usage transaction's time. The walks now
look up what processes each node type once per walk (moto rebuilt that
map twice per node and asked isinstance of abstract classes); the copy is
unpickled from the tree pickled once; the three checks of the expression
alone (its clauses, overlapping paths, no key attribute updated) run once
per expression, names and table keys, while it passes them; and each
condition is parsed once per expression, names and values, where moto
parses it twice per request and again for every record. With
MOTO_FAST_JSON_CHECK=1 each copy is also compared with deepcopy's.

4. What moto lists per request and does not change while it runs (its own
package folders, a responses class's methods) is listed once.

5. A Query of the table itself reads the partition it asks for. moto 5.2.5
sorts every item of the table and keeps those of the partition, so each
Query costs time in proportion to the table's size (most of moto's time in
the usage load's setup). The partition's items are the same, in the same
order; everything after (ranges, pages, filters, projections) is moto's.
A Query of an index runs unchanged.

TestMoto_ThePatchedServerAnswersAsMotoItself sends the same requests,
refusals and cancellations among them, each a cache could change twice,
to this server and to moto as released (MOTO_UNPATCHED=1) and compares
every answer.

Any other moto version runs unchanged, with a warning: the replacement
mirrors 5.2.5's code and is only applied to it.

Usage: python scripts/moto_server.py [moto_server's flags]
"""

import functools
import json
import os
import pickle
import sys
import threading

import moto
from moto import backends
from moto.core import responses as core_responses
from moto.dynamodb.parsing import ast_nodes, validators
from moto.dynamodb.parsing.expressions import UpdateExpressionParser
from moto.dynamodb import comparisons, models
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


# Whether a type is an AST node: Node is an abstract class, whose
# isinstance is slow, and the answer depends on the type alone.
_is_node = {}


def _traverse(self, node):
    """DepthFirstTraverser.traverse, with what processes each node type
    looked up once per traversal: moto builds the processor's map twice per
    node and asks isinstance of abstract classes for each. Every
    processor's map is a constant literal of its own methods; the walk,
    its hook, the order and the first matching entry are moto's."""
    processing_map = self._processing_map()
    processor_of = {}

    def visit(node, child_id=-1):
        kind = type(node)
        is_node = _is_node.get(kind)
        if is_node is None:
            is_node = _is_node[kind] = isinstance(node, ast_nodes.Node)
        if not is_node:
            return node
        parent = node.parent
        if node.children is not None:
            for i, child in enumerate(node.children):
                self.pre_processing_of_child(node, i)
                visit(child, i)
        if kind not in processor_of:
            processor_of[kind] = next((process for k, process in processing_map.items() if isinstance(node, k)), None)
        process = processor_of[kind]
        if process is not None:
            node = process(node)
            node.parent = parent
            if parent:
                parent.children[child_id] = node
        return node

    return visit(node)


_deepcopy = validators.deepcopy
# id of a parsed update expression → (the tree, held so that its id is not
# another's; the tree pickled).
_pickled = {}


def _copy(value):
    """The validator's copy of a parsed update expression, unpickled from
    the tree pickled once: the same tree (its nodes are plain objects) in
    an eighth of deepcopy's time. Anything else is deep-copied as before."""
    if not isinstance(value, ast_nodes.Node):
        return _deepcopy(value)
    held = _pickled.get(id(value))
    if held is None or held[0] is not value:
        if len(_pickled) >= 4096:
            _pickled.clear()
        held = _pickled[id(value)] = (value, pickle.dumps(value, pickle.HIGHEST_PROTOCOL))
    copied = pickle.loads(held[1])
    if os.environ.get("MOTO_FAST_JSON_CHECK") == "1" and not _same(copied, _deepcopy(value), set()):
        raise RuntimeError(f"moto_server.py: the copy of {value} differs from deepcopy's")
    return copied


def _same(a, b, seen):
    """Whether two object graphs are equal: the same types, and equal
    attributes and items, followed through cycles (a node's parent)."""
    if type(a) is not type(b):
        return False
    if (id(a), id(b)) in seen:
        return True
    seen.add((id(a), id(b)))
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y, seen) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k], seen) for k in a)
    if hasattr(a, "__dict__"):
        return _same(vars(a), vars(b), seen)
    return a == b


_parse_condition = comparisons.ConditionExpressionParser.parse
# (expression, names, values) as JSON → (the parsed condition, the names
# and the values it uses).
_conditions = {}


def parse_condition(self):
    """ConditionExpressionParser.parse, once per expression, names and
    values: moto parses each action's condition twice per request (to list
    the names it uses, then to check it), and the same condition again for
    every record. The parse is a pure function of those three, its only
    side effect is to list the names and values used (repeated on a hit),
    and its tree is only evaluated, never changed."""
    try:
        key = (
            self.condition_expression,
            json.dumps(self.expression_attribute_names, sort_keys=True),
            json.dumps(self.expression_attribute_values, sort_keys=True),
        )
    except (TypeError, ValueError):
        return _parse_condition(self)
    hit = _conditions.get(key)
    if hit is None:
        names, values = len(self.expr_attr_names_found), len(self.expr_attr_values_found)
        op = _parse_condition(self)
        hit = (op, self.expr_attr_names_found[names:], self.expr_attr_values_found[values:])
        if len(_conditions) >= 4096:
            _conditions.clear()
        _conditions[key] = hit
        return op
    self.expr_attr_names_found.extend(hit[1])
    self.expr_attr_values_found.extend(hit[2])
    return hit[0]


# The validator's first three processors check the expression alone (its
# clauses, its paths' overlaps, that no key attribute is updated), given
# its names and the table's keys; each returns the tree unchanged. For an
# expression that passed them, (its parsed tree, names, keys) → that tree
# (held, so that its id is not another's). moto 5.2.5 lists them first.
_EXPRESSION_CHECKS = (validators.ActionCountValidator, validators.OverlappingPathsValidator, validators.UpdateHashRangeKeyValidator)
_checked = {}
_validator_init = validators.UpdateExpressionValidator.__init__


def _validator_init_keeping(self, expression, *args, **kwargs):
    _validator_init(self, expression, *args, **kwargs)
    self.parsed = expression


def validate(self):
    """UpdateExpressionValidator.validate, without the checks of the
    expression alone once it passed them: moto runs them for every action,
    and they walk the tree more than all the rest."""
    key = (id(self.parsed), json.dumps(self.expression_attribute_names, sort_keys=True), tuple(self.table.table_key_attrs))
    passed = _checked.get(key) is self.parsed
    n = self.node_to_validate
    for i, processor in enumerate(self.processors):
        if passed and i < len(_EXPRESSION_CHECKS):
            continue
        n = processor.traverse(n)
        if i == len(_EXPRESSION_CHECKS) - 1:
            if len(_checked) >= 4096:
                _checked.clear()
            _checked[key] = self.parsed
    return n


# The partition a Query of the table itself asks for, while it runs on
# this thread; all_items then lists that partition alone.
_partition = threading.local()
_query, _all_items = models.table.Table.query, models.table.Table.all_items


def query(self, hash_key, range_comparison, range_objs, limit, exclusive_start_key, scan_index_forward,
          projection_expressions, index_name=None, *args, **kwargs):
    """Table.query, reading only the partition asked for when it is the
    table's: moto keeps the items of all_items() whose hash key is it."""
    _partition.key = hash_key if index_name is None else None
    try:
        return _query(self, hash_key, range_comparison, range_objs, limit, exclusive_start_key, scan_index_forward,
                      projection_expressions, index_name, *args, **kwargs)
    finally:
        _partition.key = None


def all_items(self):
    """Table.all_items, or during a Query of the table the items of its
    partition, sorted as all_items sorts them: the only ones Query keeps."""
    key = getattr(_partition, "key", None)
    if key is None:
        return _all_items(self)
    part = self.items.get(key)
    if part is None:
        return []
    items = list(part.values()) if self.range_key_attr else [part]
    return sorted(items, key=lambda x: (x.hash_key, x.range_key) if x.range_key else x.hash_key)


def patch():
    """Applies the changes above to moto 5.2.5; any other version runs
    unchanged, with a warning."""
    if moto.__version__ != PATCHED_VERSION:
        print(
            f"moto_server.py: moto {moto.__version__} is not {PATCHED_VERSION}; "
            "running it unpatched (transactions copy whole tables)",
            file=sys.stderr,
        )
        return
    models.DynamoDBBackend.transact_write_items = transact_write_items
    core_responses.ActionResult.execute_result = execute_result
    UpdateExpressionParser.make = staticmethod(functools.lru_cache(maxsize=1024)(UpdateExpressionParser.make))
    ast_nodes.DepthFirstTraverser.traverse = _traverse
    validators.deepcopy = _copy
    comparisons.ConditionExpressionParser.parse = parse_condition
    validators.UpdateExpressionValidator.__init__ = _validator_init_keeping
    validators.UpdateExpressionValidator.validate = validate
    models.table.Table.query = query
    models.table.Table.all_items = all_items
    # Both list what does not change while the server runs (moto's own
    # package folders, a class's methods); moto lists them per request.
    modules = tuple(backends.list_of_moto_modules())
    backends.list_of_moto_modules = lambda: modules
    core_responses.method_names_from_class = functools.lru_cache(maxsize=None)(core_responses.method_names_from_class)


if __name__ == "__main__":
    if os.environ.get("MOTO_UNPATCHED") != "1":
        patch()
    sys.exit(main())
