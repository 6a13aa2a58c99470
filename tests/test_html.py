"""Notebook HTML of environments, plans and reports: small, grouped, tinted, escaped, well-formed."""

from __future__ import annotations

import dataclasses
import random
from html.parser import HTMLParser
from typing import Any

import pytest

from expkit import Environment, Status, make, plan, task
from expkit._html import natural_key
from expkit._tables import MAX_ROWS, STATUS_COLOURS, html_table

#: Elements without an end tag.
_VOID = frozenset(("br", "hr", "img", "input", "meta", "link", "col", "wbr"))


@dataclasses.dataclass
class Element:
    """A parsed element: its tag, attributes, children and text."""

    tag: str
    attrs: dict[str, str]
    children: list[Element] = dataclasses.field(default_factory=list)
    parts: list[str | Element] = dataclasses.field(default_factory=list)

    @property
    def text(self) -> str:
        """The text inside, children's included."""
        return "".join(p if isinstance(p, str) else p.text for p in self.parts)

    def find(self, tag: str) -> list[Element]:
        """Every element of ``tag`` inside this one, in document order."""
        found = []
        for child in self.children:
            if child.tag == tag:
                found.append(child)
            found += child.find(tag)
        return found

    def rows(self) -> list[Element]:
        """The body rows of this table (not those of tables nested in it)."""
        (body,) = (c for c in self.children if c.tag == "tbody")
        return [c for c in body.children if c.tag == "tr"]

    def cells(self) -> list[str]:
        """The text of this row's cells."""
        return [c.text for c in self.children if c.tag in {"td", "th"}]


class _Tree(HTMLParser):
    """Parses a fragment into Elements; an end tag that does not close the open element fails."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Element("root", {})
        self.open = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, {k: v or "" for k, v in attrs})
        self.open[-1].children.append(element)
        self.open[-1].parts.append(element)
        if tag not in _VOID:
            self.open.append(element)

    def handle_endtag(self, tag: str) -> None:
        assert tag not in _VOID, f"</{tag}>"
        assert self.open[-1].tag == tag, f"</{tag}> closes <{self.open[-1].tag}>"
        self.open.pop()

    def handle_data(self, data: str) -> None:
        self.open[-1].parts.append(data)


def parse(page: str) -> Element:
    """The page as a tree; fails unless every tag is closed, in order."""
    tree = _Tree()
    tree.feed(page)
    tree.close()
    assert tree.open == [tree.root], f"unclosed: {[e.tag for e in tree.open[1:]]}"
    return tree.root


def top_table(page: str, index: int = -1) -> Element:
    """One of the page's top-level tables (not one inside a ``<details>``): the last by default."""
    root = parse(page)
    nested = {id(t) for d in root.find("details") for t in d.find("table")}
    return [t for t in root.find("table") if id(t) not in nested][index]


def tint(row: Element) -> str:
    """A row's background colour ('' if none)."""
    style = row.attrs.get("style", "")
    return style.partition("background:")[2].partition(";")[0]


def sweep(table: Element, step: str) -> tuple[Element, Element]:
    """The row of a sweep and the table of its instances, from the row after it."""
    rows = table.rows()
    (k,) = (k for k, row in enumerate(rows) if row.cells()[0].startswith(f"{step} ("))
    (details,) = rows[k + 1].find("details")
    return rows[k], details.find("table")[0]


def _steps(count: int, prefix: str = "s") -> None:
    """Declare ``count`` independent plain steps."""
    for k in range(count):

        def step(env: Environment) -> None:
            env[step.__name__] = 1

        step.__name__ = step.__qualname__ = f"{prefix}{k}"
        task(step)


# --------------------------------------------------------------------------- truncation


class TestTruncation:
    """A table shows MAX_ROWS rows, then one counting the others."""

    def test_plain_steps_beyond_the_limit_are_counted(self) -> None:
        """A plan of MAX_ROWS + 10 steps shows MAX_ROWS rows and "… and 10 more (10 run)"."""
        _steps(MAX_ROWS + 10)
        page = plan()._repr_html_()
        rows = top_table(page).rows()
        assert len(rows) == MAX_ROWS + 1
        assert rows[-1].cells() == ["… and 10 more (10 run)"]
        assert rows[-1].find("td")[0].attrs["colspan"] == "3"
        assert [r.cells()[0] for r in rows[:3]] == ["s0", "s1", "s2"]
        assert "<b>Plan</b>: 60 to run, 0 to skip" in page

    def test_a_plan_at_the_limit_has_no_more_row(self) -> None:
        """Exactly MAX_ROWS steps: every one shown, no "more" row."""
        _steps(MAX_ROWS)
        rows = top_table(plan()._repr_html_()).rows()
        assert len(rows) == MAX_ROWS
        assert not any("more" in row.text for row in rows)

    def test_what_needs_attention_is_shown_first(self) -> None:
        """Past the limit, the steps that run are shown before those skipped, in plan order."""
        _steps(MAX_ROWS + 30)
        make(env="e", new=True)
        runs = [f"s{MAX_ROWS + 20}", f"s{MAX_ROWS + 25}"]
        rows = top_table(plan(env="e", force=runs)._repr_html_()).rows()
        names = [row.cells()[0] for row in rows[:-1]]
        assert len(names) == MAX_ROWS
        assert names[-2:] == runs
        assert names[:3] == ["s0", "s1", "s2"]
        assert rows[-1].cells() == ["… and 30 more (30 skip)"]

    def test_sweep_instances_are_truncated_in_their_details(self) -> None:
        """A sweep of 10,000 instances is one row; its details show MAX_ROWS and count the rest."""

        @task(grid={"i": range(10_000)})
        def big(env: Environment, i: int) -> None: ...

        page = plan()._repr_html_()
        table = top_table(page)
        assert len(table.rows()) == 2  # the sweep's row and the row holding its details
        row, instances = sweep(table, "big")
        assert row.cells() == ["big (10,000 instances)", "10,000 run", "10,000 never run"]
        inner = instances.rows()
        assert len(inner) == MAX_ROWS + 1
        assert inner[0].cells() == ["big[i=0]", "run", "never run"]
        assert inner[-1].cells() == [f"… and {10_000 - MAX_ROWS:,} more (9,950 run)"]
        assert len(page) < 20_000

    def test_html_table_counts_rows_beyond_its_limit(self) -> None:
        """The generic table escapes its text cells, tints rows, and counts those past ``limit``."""
        rows = [(f"<row {k}>", "x") for k in range(5)]
        table = parse(html_table(("a", "b"), rows, status=[Status.DONE] * 5, limit=3))
        (element,) = table.find("table")
        body = element.rows()
        assert [r.cells()[0] for r in body] == ["<row 0>", "<row 1>", "<row 2>", "… and 2 more"]
        assert tint(body[0]) == STATUS_COLOURS[Status.DONE]

    def test_environment_keys_and_steps_are_truncated(self) -> None:
        """An environment of many keys and steps shows MAX_ROWS of each."""
        env = Environment()
        for k in range(MAX_ROWS + 5):
            env[f"key{k}"] = k
            env.set_done(f"step{k}")
        page = env._repr_html_()
        keys, steps = top_table(page, 0), top_table(page, 1)
        assert len(keys.rows()) == MAX_ROWS + 1
        assert keys.rows()[-1].cells() == ["… and 5 more"]
        assert steps.rows()[-1].cells() == ["… and 5 more (5 done)"]
        assert [r.cells()[0] for r in keys.rows()[:3]] == ["key0", "key1", "key2"]


# --------------------------------------------------------------------------- sweeps


def _mixed_sweep() -> Any:
    """A sweep of 10 instances where i=3 and i=7 fail, and a step after it."""

    @task
    def prepare(env: Environment) -> None:
        env["ready"] = True

    @task(requires=[prepare], grid={"i": range(10)})
    def fit(env: Environment, i: int) -> int:
        if i in {3, 7}:
            msg = f"diverged at {i}"
            raise ValueError(msg)
        return i

    @task(requires=[fit])
    def summarise(env: Environment) -> None: ...

    return make(env="e", new=True, check=False, on_event=lambda _: None)


class TestSweepRows:
    """In a plan or a report, a sweep is one row with its counts; plain steps keep a row each."""

    def test_report_counts_outcomes(self) -> None:
        """The report's sweep row counts statuses and names the failed instances."""
        report = _mixed_sweep()
        table = top_table(report._repr_html_())
        names = [row.cells()[0] for row in table.rows() if not row.find("details")]
        assert names == ["prepare", "fit (10 instances)", "summarise"]
        row, instances = sweep(table, "fit")
        cells = row.cells()
        assert cells[1] == "8 done, 2 failed"
        assert cells[2] == "10"  # attempts
        assert cells[4] == "not done: fit[i=3], fit[i=7]"
        assert tint(row) == STATUS_COLOURS[Status.FAILED]
        statuses = {r.cells()[0]: r.cells()[1] for r in instances.rows()}
        assert len(statuses) == 10
        assert statuses["fit[i=3]"] == "failed"
        assert statuses["fit[i=4]"] == "done"
        assert table.rows()[-1].cells()[:2] == ["summarise", "skipped"]

    def test_plan_counts_actions(self) -> None:
        """After the failures, the plan's sweep row says "2 run, 8 skip" and why."""
        _mixed_sweep()
        page = plan(env="e")._repr_html_()
        row, instances = sweep(top_table(page), "fit")
        name, action, reason = row.cells()
        assert (name, action) == ("fit (10 instances)", "2 run, 8 skip")
        assert reason.startswith("8 up to date; 1 failed at ")
        assert "ValueError: diverged at 3" in reason
        runs = [r.cells()[0] for r in instances.rows() if r.cells()[1] == "run"]
        assert runs == ["fit[i=3]", "fit[i=7]"]
        assert "<b>Plan</b>: 3 to run, 9 to skip" in page

    def test_details_are_collapsed(self) -> None:
        """The instances are in a ``<details>`` without ``open``, spanning the table."""
        report = _mixed_sweep()
        root = parse(report._repr_html_())
        (details,) = root.find("details")
        assert "open" not in details.attrs
        assert details.find("summary")[0].text == "fit: 10 instances"

    def test_text_report_is_unchanged(self) -> None:
        """``str()`` still lists every instance on a line."""
        report = _mixed_sweep()
        lines = str(report).splitlines()
        assert sum(line.startswith("fit[") for line in lines) == 10

    def test_plan_keeps_the_grid_order(self) -> None:
        """A plan lists a sweep's instances in its grid's order."""

        @task(grid={"epochs": [200, 50, 7]})
        def train(env: Environment, epochs: int) -> None: ...

        _, instances = sweep(top_table(plan()._repr_html_()), "train")
        names = [r.cells()[0] for r in instances.rows()]
        assert names == ["train[epochs=200]", "train[epochs=50]", "train[epochs=7]"]


# --------------------------------------------------------------------------- environment


class TestEnvironmentSteps:
    """An environment's steps: tinted by status, sweeps grouped, in natural order."""

    def test_each_status_has_its_colour(self) -> None:
        """Every status's row carries that status's colour."""
        env = Environment()
        for status in Status:
            env.set_status(f"step_{status.value}", status)
        rows = top_table(env._repr_html_()).rows()
        seen = {row.cells()[1]: tint(row) for row in rows}
        assert seen == {status.value: STATUS_COLOURS[status] for status in Status}

    def test_instances_in_natural_order(self) -> None:
        """``fit[epochs=7]`` before ``fit[epochs=50]`` before ``fit[epochs=200]``."""
        env = Environment()
        for epochs in (200, 50, 7, 1000):
            env.set_done(f"fit[epochs={epochs}]")
        env.set_failed("fit[epochs=9]")
        row, instances = sweep(top_table(env._repr_html_()), "fit")
        names = [r.cells()[0] for r in instances.rows()]
        assert names == [f"fit[epochs={e}]" for e in (7, 9, 50, 200, 1000)]
        assert row.cells()[1] == "4 done, 1 failed"
        assert tint(row) == STATUS_COLOURS[Status.FAILED]

    def test_keys_in_natural_order(self) -> None:
        """Data keys sort with numbers as numbers."""
        env = Environment()
        for key in ("run10", "run2", "run1", "alpha"):
            env[key] = 0
        keys = [r.cells()[0] for r in top_table(env._repr_html_(), 0).rows()]
        assert keys == ["alpha", "run1", "run2", "run10"]


@pytest.mark.parametrize(
    "names",
    [
        ["f[lr=1e-05]", "f[lr=0.0001]", "f[lr=0.001]", "f[lr=0.01]", "f[lr=0.1]", "f[lr=0.15]"],
        ["f[x=-2]", "f[x=-1]", "f[x=0]", "f[x=1.5]", "f[x=2]"],
        ["run-1", "run-2", "run-10"],
        ["a", "a1", "a2", "a10", "b"],
        ["f[a=1,b=2.5]", "f[a=1,b=10]", "f[a=2,b=1]"],
    ],
)
def test_natural_key(names: list[str]) -> None:
    """Numbers compare as numbers: negative after ``=``, decimals and exponents included."""
    shuffled = random.Random(0).sample(names, len(names))
    assert sorted(shuffled, key=natural_key) == names


# --------------------------------------------------------------------------- escaping


class TestEscaping:
    """Names, values, reasons and errors are text, never markup."""

    def test_environment_key_and_value(self) -> None:
        """A key ``<script>`` shows as that text, and the page holds no script element."""
        env = Environment()
        env["<script>alert(1)</script>"] = "<b>bold</b>"
        env.set_failed("<img src=x>")
        page = env._repr_html_()
        root = parse(page)
        assert not root.find("script")
        assert not root.find("img")
        assert not root.find("b")
        keys = top_table(page, 0).rows()[0].cells()
        assert keys == ["<script>alert(1)</script>", "'<b>bold</b>'"]
        assert top_table(page, 1).rows()[0].cells()[0] == "<img src=x>"

    def test_error_messages_in_plan_and_report(self) -> None:
        """An error message with markup is escaped in the report and in the plan's reason."""

        @task
        def broken(env: Environment) -> None:
            msg = "<script>alert(1)</script>"
            raise ValueError(msg)

        report = make(env="e", new=True, check=False, on_event=lambda _: None)
        for page in (report._repr_html_(), plan(env="e")._repr_html_()):
            root = parse(page)
            assert not root.find("script")
            assert "ValueError: <script>alert(1)</script>" in top_table(page).rows()[0].text


# --------------------------------------------------------------------------- form


class TestWellFormed:
    """Pages are balanced, self-contained and styled only inside their own class."""

    def test_pages_are_balanced_and_scoped(self) -> None:
        """Report, plan and environment parse with every tag closed; their style is scoped."""
        report = _mixed_sweep()
        pages = [report._repr_html_(), plan(env="e")._repr_html_(), Environment.load("e")]
        for page in [*pages[:2], pages[2]._repr_html_()]:
            root = parse(str(page))
            (wrapper,) = root.children
            assert wrapper.tag == "div"
            assert wrapper.attrs["class"] == "expkit-html"
            (style,) = root.find("style")
            selectors = [r.partition("{")[0] for r in style.text.split("}") if r]
            assert all(
                s.startswith(".expkit-html ") for group in selectors for s in group.split(",")
            )
            assert not root.find("script")

    def test_empty_pages(self) -> None:
        """No steps, nothing run, no data: each page is still well-formed."""
        assert "0 to run, 0 to skip" in parse(plan()._repr_html_()).text
        assert "0 ran" in parse(make(env="e", new=True)._repr_html_()).text
        assert top_table(Environment()._repr_html_()).rows() == []
