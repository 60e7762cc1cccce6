"""
``.. memux-module:: MODULE``: the API reference of one public memux module,
every name in its ``__all__``, each documented once.

- A name the module imports from another public module (``memux.protocol``
  re-exports ``ChannelTransport`` from ``memux.transport``) is listed with
  a link to that module's description, not described a second time; its
  name here (``memux.protocol.ChannelTransport``) is a cross reference
  target that leads there too.
- Anything else is autodoc's (``automodule`` with ``:members:``), so a
  public name without a docstring (or ``#:`` comment) is left out, and
  ``memux.test.test_docs`` notices.  Constants a public module takes from a
  private one (``memux.settings.ALPN`` from ``memux._wire``) keep the
  ``#:`` comment they have there.
- zope interfaces, which autodoc skips (they are not classes), are listed
  with their methods (as declared, annotations included) and attributes.
"""

from __future__ import annotations

import ast
import functools
import importlib
import inspect
import re
import sys
from typing import Any

from docutils import nodes
from sphinx.domains.python import ObjectEntry
from sphinx.pycode import ModuleAnalyzer
from sphinx.util.docutils import SphinxDirective
from zope.interface.interface import Attribute, InterfaceClass, Method


def isPublic(moduleName: str) -> bool:
    """
    Whether ``moduleName`` is a memux module this reference documents:
    no part of its name private, and not the tests or the benchmarks.
    """
    parts = moduleName.split(".")
    return (
        parts[0] == "memux"
        and not any(part.startswith("_") for part in parts)
        and parts[1:2] not in (["test"], ["bench"])
    )


@functools.cache
def importedFrom(moduleName: str) -> dict[str, str]:
    """
    Each name ``moduleName`` imports with ``from MODULE import NAME``
    (anywhere in it, ``TYPE_CHECKING`` blocks included), with ``MODULE``.
    """
    tree = ast.parse(inspect.getsource(importlib.import_module(moduleName)))
    found = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                found[alias.asname or alias.name] = node.module
    return found


def home(moduleName: str, name: str) -> str | None:
    """
    The public module that documents ``moduleName``'s ``name``, if not
    ``moduleName`` itself: the one it is imported from, if that module is
    public and exports it too.
    """
    source = importedFrom(moduleName).get(name)
    if source is None or source == moduleName or not isPublic(source):
        return None
    exported = getattr(importlib.import_module(source), "__all__", ())
    return source if name in exported else None


def definingComment(moduleName: str, name: str) -> tuple[str, list[str]] | None:
    """
    The module that defines constant ``name`` of ``moduleName``, following
    its imports, and the ``#:`` comment there, if there is one.
    """
    seen = set()
    while moduleName not in seen:
        seen.add(moduleName)
        comments = ModuleAnalyzer.for_module(moduleName).find_attr_docs()
        if ("", name) in comments:
            return moduleName, list(comments[("", name)])
        source = importedFrom(moduleName).get(name)
        if source is None:
            return None
        moduleName = source
    return None


def docLines(doc: str | None, indent: str) -> list[str]:
    """The lines of docstring ``doc``, dedented, then indented by ``indent``."""
    lines = inspect.cleandoc(doc or "").splitlines()
    return [indent + line if line else "" for line in lines]


def methodSignatures(interface: InterfaceClass) -> dict[str, str]:
    """
    Each method of ``interface`` with its signature as written in its
    source, annotations included (zope keeps only the parameters' names).
    """
    module = sys.modules[interface.__module__]
    signatures = {}
    for node in ast.parse(inspect.getsource(module)).body:
        if isinstance(node, ast.ClassDef) and node.name == interface.__name__:
            for item in node.body:
                if isinstance(item, ast.FunctionDef):
                    returns = f" -> {ast.unparse(item.returns)}" if item.returns else ""
                    signatures[item.name] = f"({ast.unparse(item.args)}){returns}"
    return signatures


def interfaceLines(name: str, interface: InterfaceClass) -> list[str]:
    """reST describing ``interface``, its methods and its attributes."""
    bases = ", ".join(
        f":class:`~{base.__module__}.{base.__name__}`" for base in interface.__bases__
    )
    lines = [f".. py:class:: {name}", "", f"   Bases: {bases}", ""]
    lines += docLines(interface.__doc__, "   ") + [""]
    signatures = methodSignatures(interface)
    for member in interface.names():
        description = interface[member]
        if isinstance(description, Method):
            signature = signatures.get(member, description.getSignatureString())
            lines += [f"   .. py:method:: {member}{signature}", ""]
        elif isinstance(description, Attribute):
            lines += [f"   .. py:attribute:: {member}", ""]
        else:
            continue
        lines += docLines(description.getDoc(), "      ") + [""]
    return lines


def summary(doc: str | None) -> str:
    """The first paragraph of docstring ``doc``."""
    return inspect.cleandoc(doc or "").split("\n\n")[0]


def kindOf(value: Any) -> tuple[str, str]:
    """The Python domain's directive and role for ``value``."""
    if isinstance(value, type) and issubclass(value, BaseException):
        return "exception", "exc"
    if isinstance(value, (type, InterfaceClass)):
        return "class", "class"
    if callable(value):
        return "function", "func"
    return "data", "data"


class ModuleReference(SphinxDirective):
    """``.. memux-module:: MODULE``: see the module's docstring."""

    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        moduleName = self.arguments[0]
        module = importlib.import_module(moduleName)
        analyzer = ModuleAnalyzer.for_module(moduleName)
        comments = analyzer.find_attr_docs()
        elsewhere = []  # (name, home)
        interfaces = []  # name
        constants = []  # (name, comment)
        for name in module.__all__:
            value = getattr(module, name)
            where = home(moduleName, name)
            if where is not None:
                elsewhere.append((name, where))
            elif isinstance(value, InterfaceClass):
                interfaces.append(name)
            elif not hasattr(value, "__module__") and ("", name) not in comments:
                found = definingComment(moduleName, name)
                if found is not None:
                    constants.append((name, found[1]))
        excluded = [name for name, _ in elsewhere] + interfaces
        excluded += [name for name, _ in constants]
        lines = [f".. automodule:: {moduleName}", "   :members:"]
        if excluded:
            lines.append(f"   :exclude-members: {', '.join(excluded)}")
        lines += ["", f".. py:currentmodule:: {moduleName}", ""]
        for name, comment in constants:
            value = getattr(module, name)
            lines += [f".. py:data:: {name}", f"   :value: {value!r}", ""]
            lines += ["   " + line if line else "" for line in comment] + [""]
        for name in interfaces:
            lines += interfaceLines(name, getattr(module, name))
        if elsewhere:
            lines += [".. rubric:: Defined in other modules", ""]
            for name, where in elsewhere:
                value = getattr(module, name)
                role = kindOf(value)[1]
                # The summary's names are those of the module it is from.
                lines += [f".. py:currentmodule:: {where}", ""]
                lines += [f":{role}:`~{where}.{name}` (``{where}``)"]
                lines += docLines(summary(value.__doc__), "    ") + [""]
            lines += [f".. py:currentmodule:: {moduleName}", ""]
        return self.parse_text_to_nodes("\n".join(lines))


def addAliases(app: Any, env: Any) -> None:
    """
    Make each name a public module imports from another one
    (``memux.SessionLost``, ``memux.protocol.ChannelTransport``) a cross
    reference target, and an entry of ``objects.inv``, that leads to where
    the other module documents it.  Only names documented there get one.
    """
    domain = env.get_domain("py")
    added = True
    while added:  # until re-exports of re-exports are found too
        added = False
        for moduleName in [name for name in domain.modules if isPublic(name)]:
            module = importlib.import_module(moduleName)
            for name in getattr(module, "__all__", ()):
                where = home(moduleName, name)
                target = domain.objects.get(f"{where}.{name}")
                alias = f"{moduleName}.{name}"
                if where is None or target is None or alias in domain.objects:
                    continue
                domain.objects[alias] = ObjectEntry(
                    target.docname, target.node_id, target.objtype, aliased=True
                )
                added = True


class _Qualify(ast.NodeTransformer):
    """
    Names in an annotation as the Python domain can link them: a name
    imported from another module with that module (``~`` shows only the
    last part), a dotted name with ``~`` too.
    """

    def __init__(self, imports: dict[str, str]) -> None:
        self.imports = imports

    def visit_Name(self, node: ast.Name) -> ast.AST:
        source = self.imports.get(node.id)
        if source is None:
            return node
        return ast.Name(id=f"~{source}.{node.id}")

    def visit_Attribute(self, node: ast.Attribute) -> ast.AST:
        return ast.Name(id=f"~{ast.unparse(node)}")

    def visit_UnaryOp(self, node: ast.UnaryOp) -> ast.AST:
        # ~module.Name (autodoc's own short form) is linkable as it is; in
        # ~module.Name[...], what is in brackets may not be.
        if not isinstance(node.op, ast.Invert):
            return self.generic_visit(node)
        if isinstance(node.operand, ast.Subscript):
            node.operand.slice = self.visit(node.operand.slice)
        return node


def readableAnnotations(
    app: Any,
    what: str,
    name: str,
    obj: Any,
    options: Any,
    signature: str | None,
    returnAnnotation: str | None,
) -> tuple[str | None, str | None] | None:
    """
    Annotations in signatures as names the Python domain can link: a zope
    interface (which autodoc shows as ``<InterfaceClass twisted...IAddress>``)
    by its dotted name, and a name autodoc could not evaluate (imported only
    for type checking, or beside one that was) with the module it is
    imported from.
    """
    moduleName = getattr(obj, "__module__", None)
    if signature is None or not isinstance(moduleName, str):
        return None

    def interfaces(text: str) -> str:
        return re.sub(r"<InterfaceClass ([\w.]+)>", r"\1", text)

    returns = f" -> {interfaces(returnAnnotation)}" if returnAnnotation else ""
    try:
        tree = ast.parse(f"def f{interfaces(signature)}{returns}: pass")
    except SyntaxError:  # a default that is not Python, such as a repr
        return signature, returnAnnotation
    function = tree.body[0]
    assert isinstance(function, ast.FunctionDef)
    qualify = _Qualify(importedFrom(moduleName))
    arguments = function.args
    every = arguments.posonlyargs + arguments.args + arguments.kwonlyargs
    every += [a for a in (arguments.vararg, arguments.kwarg) if a is not None]
    for argument in every:
        if argument.annotation is not None:
            argument.annotation = qualify.visit(argument.annotation)
    returned = None
    if function.returns is not None:
        returned = ast.unparse(qualify.visit(function.returns))
    return f"({ast.unparse(arguments)})", returned


def resolveImported(app: Any, env: Any, node: Any, contnode: Any) -> Any:
    """
    Resolve a name that is not found as the module it is written about
    does: ``SessionLost`` in ``memux.transport``, which imports it from
    ``memux.error``, is ``memux.error.SessionLost``; and as any kind of
    object, not only the kind its role asked for.  A name imported from
    Twisted is Twisted's, left unlinked as ``nitpick_ignore_regex`` says
    (there is no inventory of Twisted's here).
    """
    moduleName = node.get("py:module")
    target = node.get("reftarget", "")
    if node.get("refdomain") != "py" or moduleName not in sys.modules:
        return None
    domain = env.get_domain("py")
    source = importedFrom(moduleName).get(target.partition(".")[0])
    qualified = target if source is None else f"{source}.{target}"
    # An annotation is a py:class reference, also when it names a type
    # alias (documented as data), as memux.tls.PEMSource is.
    for name in dict.fromkeys([qualified, target]):
        for role in dict.fromkeys([node["reftype"], "obj"]):
            found = domain.resolve_xref(
                env, node["refdoc"], app.builder, role, name, node, contnode
            )
            if found is not None:
                return found
    kind = f"py:{node['reftype']}"
    for kindPattern, namePattern in app.config.nitpick_ignore_regex:
        if re.fullmatch(kindPattern, kind) and re.fullmatch(namePattern, qualified):
            return contnode
    return None


def setup(app: Any) -> dict[str, Any]:
    app.connect("missing-reference", resolveImported)
    app.connect("autodoc-process-signature", readableAnnotations)
    app.add_directive("memux-module", ModuleReference)
    app.connect("env-updated", addAliases)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
