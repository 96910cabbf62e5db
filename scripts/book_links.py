"""Fails on a broken internal link in the built book: every relative href/src in its HTML
pages must name a file of the book, and every #fragment an id in that file.

    python3 scripts/book_links.py docs/book
"""
import html.parser
import pathlib
import sys
import urllib.parse


class Page(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids, self.links = set(), []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("id", "name") and value:
                self.ids.add(value)
            if name in ("href", "src") and value is not None:
                self.links.append(value)


def parse(path, cache={}):
    if path not in cache:
        page = Page()
        page.feed(path.read_text(encoding="utf-8"))
        cache[path] = page
    return cache[path]


def main(book):
    book = pathlib.Path(book).resolve()
    broken, checked = [], 0
    for page_path in sorted(book.rglob("*.html")):
        # print.html repeats every chapter with rewritten anchors; the chapters are checked.
        if page_path.name in ("print.html", "404.html", "toc.html"):
            continue
        for link in parse(page_path).links:
            url = urllib.parse.urlsplit(link)
            if url.scheme or url.netloc or link.startswith(("mailto:", "javascript:")):
                continue
            checked += 1
            target = page_path if not url.path else (page_path.parent / urllib.parse.unquote(url.path)).resolve()
            if target.is_dir():
                target = target / "index.html"
            if book not in target.parents and target != book:
                broken.append(f"{page_path.relative_to(book)}: {link} leaves the book")
            elif not target.is_file():
                broken.append(f"{page_path.relative_to(book)}: {link} (no such file)")
            elif url.fragment and target.suffix == ".html" and urllib.parse.unquote(url.fragment) not in parse(target).ids:
                broken.append(f"{page_path.relative_to(book)}: {link} (no #{url.fragment} there)")
    for line in broken:
        print(f"broken link: {line}", file=sys.stderr)
    print(f"book links: {checked} checked, {len(broken)} broken")
    return 1 if broken or checked == 0 else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "docs/book"))
