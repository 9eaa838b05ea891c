"""Textual IR: `print_graph` and `parse_graph`, with `parse_graph(print_graph(g))` lossless.

Grammar (EBNF; whitespace and `// comments` between tokens are ignored):

    graph     := "graph" IDENT "(" [source {"," source}] ")"
                 ["params" "(" [source {"," source}] ")"] "{" {node} return "}"
    source    := VALUE ":" type ["frozen"]
    node      := lhs "=" IDENT "(" [use {"," use}] ")" [attrs] ":" type {"," type}
    lhs       := VALUE | VALUE ":" INT            // VALUE:3 declares a node with 3 outputs
    use       := VALUE ["#" INT]                  // %bn#1 is output 1 of the node %bn
    attrs     := "{" [IDENT "=" attr {"," IDENT "=" attr}] "}"
    attr      := INT | FLOAT | STRING | "true" | "false" | "none" | "inf" | "-inf" | "nan"
                 | "(" [attr {"," attr} [","]] ")"
    type      := DTYPE "[" [INT {"," INT}] "]"
    return    := "return" [IDENT "=" use {"," IDENT "=" use}]
    VALUE     := "%" [A-Za-z0-9_.]+

Parameter values are not part of the text; they travel in a `.npz` beside it.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from .errors import CycleError, DanglingValueError, GraphError, ParseError
from .graph import Graph, Node, Value
from .registry import OPS, REQUIRED, check_node
from .types import DTYPES, TensorType

# -- printing ----------------------------------------------------------------------------------


def format_attr(v: Any) -> str:
    if v is None:
        return "none"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        r = repr(v)
        return r if any(c in r for c in ".en") else r + ".0"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, tuple):
        if len(v) == 1:
            return f"({format_attr(v[0])},)"
        return "(" + ", ".join(format_attr(x) for x in v) + ")"
    raise GraphError(f"cannot print attribute value {v!r}")


def format_attrs(op: str, attrs) -> str:
    """Attributes in braces, leaving out those equal to the schema's default."""
    schema = OPS[op].attrs if op in OPS else {}
    shown = [(k, v) for k, v in attrs.items()
             if not (k in schema and schema[k].default is not REQUIRED
                     and _same(schema[k].default, v))]
    if not shown:
        return ""
    return " {" + ", ".join(f"{k}={format_attr(v)}" for k, v in shown) + "}"


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b


class Namer:
    """Unique printed names: a node's hint when free, else hint_1, hint_2...; numbers if none."""

    def __init__(self) -> None:
        self.names: dict[int, str] = {}
        self.taken: set[str] = set()
        self.counter = 0

    def name(self, node: Node) -> str:
        got = self.names.get(id(node))
        if got is not None:
            return got
        hint = node.name
        if hint is None:
            while str(self.counter) in self.taken:
                self.counter += 1
            cand = str(self.counter)
        else:
            cand, k = hint, 1
            while cand in self.taken:
                cand = f"{hint}_{k}"
                k += 1
        self.taken.add(cand)
        self.names[id(node)] = cand
        return cand

    def use(self, v: Value) -> str:
        base = self.name(v.node)
        return f"%{base}" if len(v.node.types) == 1 else f"%{base}#{v.index}"


def print_graph(graph: Graph, namer: Namer | None = None) -> str:
    namer = namer or Namer()
    for v in graph.inputs + graph.params:
        namer.names[id(v.node)] = v.node.attrs["name"]
        namer.taken.add(v.node.attrs["name"])

    def source(v: Value) -> str:
        s = f"%{v.node.attrs['name']}: {v.type}"
        return s + " frozen" if v.node.attrs.get("frozen") else s

    head = f"graph {graph.name}({', '.join(source(v) for v in graph.inputs)})"
    if graph.params:
        head += f" params({', '.join(source(v) for v in graph.params)})"
    lines = [head + " {"]
    for n in graph.nodes:
        lines.append("  " + print_node(n, namer))
    outs = ", ".join(f"{k}={namer.use(v)}" for k, v in graph.outputs)
    lines.append(f"  return {outs}" if outs else "  return")
    lines.append("}")
    return "\n".join(lines) + "\n"


def print_node(n: Node, namer: Namer) -> str:
    name = namer.name(n)
    lhs = f"%{name}" if len(n.types) == 1 else f"%{name}:{len(n.types)}"
    args = ", ".join(namer.use(v) for v in n.inputs)
    types = ", ".join(str(t) for t in n.types)
    return f"{lhs} = {n.op}({args}){format_attrs(n.op, n.attrs)} : {types}"


# -- parsing -----------------------------------------------------------------------------------

_TOKEN = re.compile(r"""
    (?P<ws>[ \t\r\n]+|//[^\n]*)
  | (?P<value>%[A-Za-z0-9_.]+)
  | (?P<number>-?(?:\d+\.\d*(?:[eE][-+]?\d+)?|\d+[eE][-+]?\d+|\.\d+(?:[eE][-+]?\d+)?|\d+))
  | (?P<string>"(?:[^"\\]|\\.)*")
  | (?P<ident>-?[A-Za-z_][A-Za-z0-9_.]*)
  | (?P<punct>[(){}\[\],:=\#])
""", re.VERBOSE)


class _Tok:
    __slots__ = ("kind", "text", "line", "col")

    def __init__(self, kind: str, text: str, line: int, col: int) -> None:
        self.kind, self.text, self.line, self.col = kind, text, line, col

    def __repr__(self) -> str:
        return repr(self.text) if self.kind != "eof" else "end of input"


def _tokenize(text: str, source: str) -> list[_Tok]:
    toks: list[_Tok] = []
    pos, line, line_start = 0, 1, 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise ParseError(f"unexpected character {text[pos]!r}", line, pos - line_start + 1,
                             source)
        kind = m.lastgroup
        assert kind is not None
        if kind != "ws":
            toks.append(_Tok(kind, m.group(), line, pos - line_start + 1))
        nl = m.group().count("\n")
        if nl:
            line += nl
            line_start = m.start() + m.group().rfind("\n") + 1
        pos = m.end()
    toks.append(_Tok("eof", "", line, pos - line_start + 1))
    return toks


class _Parser:
    def __init__(self, text: str, source: str) -> None:
        self.source = source
        self.toks = _tokenize(text, source)
        self.i = 0
        self.values: dict[str, Node] = {}
        self.later_defs = self._scan_defs()

    # token helpers
    def peek(self) -> _Tok:
        return self.toks[self.i]

    def next(self) -> _Tok:
        t = self.toks[self.i]
        self.i += 1
        return t

    def fail(self, what: str, tok: _Tok | None = None) -> ParseError:
        tok = tok or self.peek()
        return ParseError(f"expected {what}, got {tok!r}", tok.line, tok.col, self.source)

    def expect(self, text: str) -> _Tok:
        if self.peek().text != text:
            raise self.fail(repr(text))
        return self.next()

    def expect_kind(self, kind: str, what: str) -> _Tok:
        if self.peek().kind != kind:
            raise self.fail(what)
        return self.next()

    def expect_count(self, what: str) -> tuple[int, _Tok]:
        """A non-negative integer literal (a dimension, an output index or count)."""
        tok = self.peek()
        if tok.kind != "number" or not tok.text.isdigit():
            raise self.fail(f"a non-negative integer {what}")
        self.next()
        return int(tok.text), tok

    def accept(self, text: str) -> bool:
        if self.peek().text == text:
            self.i += 1
            return True
        return False

    def _scan_defs(self) -> dict[str, tuple[int, list[str]]]:
        """name -> (token index of its definition, names it uses): for cycle diagnostics."""
        defs: dict[str, tuple[int, list[str]]] = {}
        toks = self.toks
        for k in range(len(toks) - 2):
            if toks[k].kind == "value" and (toks[k + 1].text == "=" or (
                    toks[k + 1].text == ":" and toks[k + 2].kind == "number"
                    and k + 3 < len(toks) and toks[k + 3].text == "=")):
                uses, j = [], k + 2
                while j < len(toks) and toks[j].text != ":" and toks[j].kind != "eof":
                    if toks[j].kind == "value":
                        uses.append(toks[j].text[1:])
                    j += 1
                defs[toks[k].text[1:]] = (k, uses)
        return defs

    # grammar
    def parse(self) -> Graph:
        self.expect("graph")
        name = self.expect_kind("ident", "a graph name").text
        inputs = self.sources("input")
        params = self.sources("param") if self.accept("params") else []
        self.expect("{")
        body: list[Node] = []
        while self.peek().text != "return":
            if self.peek().kind == "eof":
                raise self.fail("'return'")
            body.append(self.node())
        self.next()
        outputs: list[tuple[str, Value]] = []
        if self.peek().text != "}":
            while True:
                key = self.expect_kind("ident", "an output name").text
                self.expect("=")
                outputs.append((key, self.use()))
                if not self.accept(","):
                    break
        self.expect("}")
        self.expect_kind("eof", "end of input")
        return Graph(name, inputs, params, body, outputs)

    def sources(self, op: str) -> list[Value]:
        self.expect("(")
        out: list[Value] = []
        if self.peek().text != ")":
            while True:
                tok = self.expect_kind("value", "a %name")
                self.expect(":")
                ty = self.type_()
                attrs: dict[str, Any] = {"name": tok.text[1:]}
                if op == "param":
                    attrs["frozen"] = self.accept("frozen")
                self.define(tok, Node(op, (), attrs, (ty,), tok.text[1:]))
                out.append(self.values[tok.text[1:]].out)
                if not self.accept(","):
                    break
        self.expect(")")
        return out

    def define(self, tok: _Tok, node: Node) -> None:
        name = tok.text[1:]
        if name in self.values:
            from .errors import DuplicateNameError

            raise DuplicateNameError(
                f"{self.source}:{tok.line}:{tok.col}: value %{name} is defined twice")
        self.values[name] = node

    def type_(self) -> TensorType:
        tok = self.expect_kind("ident", "a dtype")
        if tok.text not in DTYPES:
            raise ParseError(f"expected a dtype ({', '.join(DTYPES)}), got {tok.text!r}",
                             tok.line, tok.col, self.source)
        self.expect("[")
        dims: list[int] = []
        if self.peek().text != "]":
            while True:
                dims.append(self.expect_count("dimension")[0])
                if not self.accept(","):
                    break
        self.expect("]")
        return TensorType(tuple(dims), tok.text)

    def use(self) -> Value:
        tok = self.expect_kind("value", "a %value")
        name = tok.text[1:]
        node = self.values.get(name)
        if node is None:
            raise self.undefined(tok)
        if self.accept("#"):
            idx, idx_tok = self.expect_count("output index")
            if idx >= len(node.outputs):
                raise ParseError(f"%{name} has {len(node.outputs)} outputs, no #{idx}",
                                 idx_tok.line, idx_tok.col, self.source)
            return node.outputs[idx]
        if len(node.outputs) != 1:
            raise ParseError(f"%{name} has {len(node.outputs)} outputs; write %{name}#i",
                             tok.line, tok.col, self.source)
        return node.out

    def undefined(self, tok: _Tok) -> GraphError:
        name = tok.text[1:]
        where = f"{self.source}:{tok.line}:{tok.col}"
        if name not in self.later_defs:
            return DanglingValueError(f"{where}: %{name} is not defined")
        import networkx as nx

        g = nx.DiGraph()
        for d, (_, uses) in self.later_defs.items():
            for u in uses:
                g.add_edge(u, d)
        try:
            cycle = nx.find_cycle(g, name)
            path = " -> ".join(f"%{a}" for a, _ in cycle) + f" -> %{cycle[0][0]}"
            return CycleError(f"{where}: cycle through {path}")
        except nx.NetworkXNoCycle:
            return DanglingValueError(f"{where}: %{name} is used before its definition")

    def node(self) -> Node:
        lhs = self.expect_kind("value", "a %name or 'return'")
        n_out = 1
        if self.accept(":"):
            n_out, _ = self.expect_count("output count")
        self.expect("=")
        op_tok = self.expect_kind("ident", "an op name")
        self.expect("(")
        operands: list[Value] = []
        if self.peek().text != ")":
            while True:
                operands.append(self.use())
                if not self.accept(","):
                    break
        self.expect(")")
        attrs: dict[str, Any] = {}
        if self.accept("{"):
            if self.peek().text != "}":
                while True:
                    key = self.expect_kind("ident", "an attribute name").text
                    self.expect("=")
                    attrs[key] = self.attr()
                    if not self.accept(","):
                        break
            self.expect("}")
        self.expect(":")
        types = [self.type_()]
        while self.accept(","):
            types.append(self.type_())
        name = lhs.text[1:]
        where = f"{self.source}:{op_tok.line}:{op_tok.col}"
        if len(types) != n_out:
            raise ParseError(f"%{name} declares {n_out} outputs but lists {len(types)} types",
                             lhs.line, lhs.col, self.source)
        try:
            full, inferred = check_node(op_tok.text, [v.type for v in operands], attrs, name)
        except GraphError as e:
            raise type(e)(f"{where}: {e}") from None
        if tuple(types) != inferred:
            from .errors import ShapeError

            raise ShapeError(f"{where}: %{name} = {op_tok.text}(...) is declared "
                             f"{', '.join(map(str, types))} but the op gives "
                             f"{', '.join(map(str, inferred))}")
        node = Node(op_tok.text, operands, full, types, name)
        self.define(lhs, node)
        return node

    def attr(self) -> Any:
        tok = self.next()
        if tok.kind == "number":
            t = tok.text
            return float(t) if any(c in t for c in ".eE") else int(t)
        if tok.kind == "string":
            return json.loads(tok.text)
        if tok.kind == "ident":
            consts = {"true": True, "false": False, "none": None, "inf": math.inf,
                      "-inf": -math.inf, "nan": math.nan}
            if tok.text in consts:
                return consts[tok.text]
        if tok.text == "(":
            items: list[Any] = []
            while not self.accept(")"):
                items.append(self.attr())
                if not self.accept(","):
                    self.expect(")")
                    break
            return tuple(items)
        raise self.fail("an attribute value", tok)


def parse_graph(text: str, source: str = "<text>") -> Graph:
    """Parse textual IR; errors carry `source:line:column` and what was expected."""
    return _Parser(text, source).parse()
