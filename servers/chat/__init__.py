"""The chat pages: pick a server, talk to it, keep conversations.

`views` (the pages and the reply's stream) → `forms` (a message and its attachments) →
`replies` (the conversation sent to the model, the reply streamed through the gateway's
`calls.start` and saved) and `render` (model output as safe HTML); `attachments` reads text
files. See docs/chat.md.
"""
