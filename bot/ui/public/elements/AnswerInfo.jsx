// Under each answer (bot/app.py sends it with the answer): which model and prompt version wrote
// it, and, after Regenerate, the earlier answers to the same question, collapsed.
// props: {model, prompt, written, earlier: [{text, model, prompt, rating}]}; rating 1, 0 or null.
// Only Tailwind classes Chainlit's own build has take effect (its CSS is purged to what it uses).
import { useState } from 'react';
import { ChevronDown, ChevronRight, ThumbsDown, ThumbsUp } from 'lucide-react';

function Rating({ value }) {
  if (value === 1) return <ThumbsUp className="h-3 w-3 text-green-600" aria-label="rated good" />;
  if (value === 0) return <ThumbsDown className="h-3 w-3 text-red-600" aria-label="rated bad" />;
  return <span className="italic">not rated</span>;
}

export default function AnswerInfo() {
  const [open, setOpen] = useState(false);
  const earlier = props.earlier || [];
  return (
    <div className="answer-info flex flex-col gap-1 text-xs text-muted-foreground">
      <div className="answer-versions" title={props.written}>
        {props.model} · prompt {props.prompt}
      </div>
      {earlier.length ? (
        <div className="earlier-answers flex flex-col gap-2">
          <button
            type="button"
            className="earlier-toggle flex items-center gap-1 w-fit hover:underline"
            aria-expanded={open}
            onClick={() => setOpen(!open)}
          >
            {open ? <ChevronDown className="h-3 w-3" /> : <ChevronRight className="h-3 w-3" />}
            Earlier answers ({earlier.length})
          </button>
          {open
            ? earlier.map((a, i) => (
                <div key={i} className="earlier-answer flex flex-col gap-1 border-l-2 pl-4">
                  <div className="flex items-center gap-2">
                    <span>{a.model} · prompt {a.prompt}</span>
                    <Rating value={a.rating} />
                  </div>
                  <div className="earlier-text whitespace-pre-wrap text-sm text-foreground">{a.text}</div>
                </div>
              ))
            : null}
        </div>
      ) : null}
    </div>
  );
}
