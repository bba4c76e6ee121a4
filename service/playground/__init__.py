"""The playground's browser side: headless Chromium for its tests and its screenshots.

The page itself is served by the API (`service.api.playground`); this package only drives a
browser at it, so it needs Selenium (the test extra) and Debian's `chromium` and
`chromium-driver`, imported when used.
"""
