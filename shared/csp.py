"""The strict Content-Security-Policy of the pages both apps serve (the arena's, the admin side's,
the API docs): scripts, styles and fonts of the app's own origin only, no inline script, nothing
from a CDN; images also as data: URLs (inline SVG icons)."""

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
