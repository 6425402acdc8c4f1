"""How the Telegram adapter reads a caption or text: is it for us, and what is the prompt."""

import pytest

from adapters.telegram import Addressing

BOT = "stepedit_test_bot"


@pytest.mark.parametrize(
    ("text", "command", "mentioned", "prompt"),
    [
        ("/edit make it snow", True, False, "make it snow"),
        ("/EDIT@StepEdit_Test_Bot make it snow", True, False, "make it snow"),
        ("/edit@otherbot make it snow", False, False, "make it snow"),
        ("/editing is fun", False, False, "/editing is fun"),
        ("make @stepedit_test_bot it snow", False, True, "make it snow"),
        ("@stepedit_test_botty hi", False, False, "@stepedit_test_botty hi"),
        ('/edit a bubble saying "one\ntwo"', True, False, 'a bubble saying "one\ntwo"'),
        ("/edit", True, False, ""),
        ("", False, False, ""),
    ],
)  # fmt: skip
def test_commands_mentions_and_prompts(
    text: str, command: bool, mentioned: bool, prompt: str
) -> None:
    said = Addressing(text, BOT)
    assert (said.command, said.mentioned, said.prompt) == (command, mentioned, prompt)
