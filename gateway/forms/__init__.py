"""Forms (issue 5, item 4): templates in XML (``form.rng``), checks of what the customer
typed, the filled form as HTML and PDF documents, and the forms of each consultation.
See docs/forms.md."""

from gateway.forms.desk import FormDesk, FormError, FormInstance
from gateway.forms.fields import Checked, Problem, check_field, check_form, display
from gateway.forms.template import FormLibrary, Template, TemplateError, parse_template

__all__ = [
    "Checked",
    "FormDesk",
    "FormError",
    "FormInstance",
    "FormLibrary",
    "Problem",
    "Template",
    "TemplateError",
    "check_field",
    "check_form",
    "display",
    "parse_template",
]
