(function(){"use strict";
var $=function(s,e){return (e||document).querySelector(s)},$$=function(s,e){return Array.prototype.slice.call((e||document).querySelectorAll(s))};
var range=document.body.dataset.range||"1h",conn=$("#conn");
function csrf(){var m=$("meta[name=csrf]");return m?m.content:""}
function dur(ms){var s=Math.max(0,Math.floor(ms/1000));if(s<60)return s+" s";var m=Math.floor(s/60);if(m<60)return m+" min";var h=Math.floor(m/60);if(h<48)return h+" h "+String(m%60).padStart(2,"0")+" min";return Math.floor(h/24)+" d "+(h%24)+" h"}
function ages(){var n=Date.now();$$("[data-since]").forEach(function(e){var t=Date.parse(e.dataset.since);if(!isNaN(t))e.textContent=dur(n-t)})}
function err(msg){var e=$("#err");if(!e){e=document.createElement("div");e.id="err";e.setAttribute("role","alert");document.body.appendChild(e)}e.textContent=msg;clearTimeout(err.t);err.t=setTimeout(function(){e.remove()},8000)}
/* The live part is re-rendered by the server (one renderer, no template twin in JS). */
var busy=false,again=false,timer=null,due=0;
function refresh(){if(busy){again=true;return}busy=true;fetch("/?part=live",{cache:"no-store",credentials:"same-origin"}).then(function(r){if(!r.ok)throw new Error(r.status);return r.text()}).then(function(h){var open={};$$("#live details[data-k]").forEach(function(d){open[d.dataset.k]=d.open});$("#live").innerHTML=h;$$("#live details[data-k]").forEach(function(d){if(d.dataset.k in open)d.open=open[d.dataset.k]});ages();var b=$("#banner .title");if(b)document.title=b.textContent+document.title.replace(/^[^·]*/," ")}).catch(function(){}).then(function(){busy=false;if(again){again=false;refresh()}})}
function soon(ms){var at=Date.now()+ms;if(timer&&due<=at)return;clearTimeout(timer);due=at;timer=setTimeout(function(){timer=null;refresh()},ms)}
var es,lost=false;
function connect(){es=new EventSource("/events");
es.onopen=function(){conn.textContent="live";conn.className="conn on";if(lost){lost=false;refresh();charts()}};
es.onerror=function(){conn.textContent="reconnecting…";conn.className="conn off";lost=true;if(es.readyState===2){setTimeout(connect,3000)}};
es.addEventListener("reading",function(){soon(2000)});
["incident","state","relay"].forEach(function(t){es.addEventListener(t,function(){soon(100)})})}
if(window.EventSource)connect();
document.addEventListener("submit",function(e){var f=e.target;if(!f.classList.contains("act"))return;e.preventDefault();
var body=new URLSearchParams(new FormData(f,e.submitter||null));$$("button",f).forEach(function(b){b.disabled=true});
fetch(f.action,{method:"POST",credentials:"same-origin",headers:{"X-CSRF-Token":csrf(),"Accept":"application/json","Content-Type":"application/x-www-form-urlencoded"},body:body})
.then(function(r){if(r.status===401){location.href="/login?next=/";return}return r.json().catch(function(){return{}}).then(function(j){if(!r.ok)err((j&&j.error)||("failed: "+r.status))})}).catch(function(x){err("failed: "+x)}).then(refresh)});
/* Charts: the same geometry as chart.go. */
var W=296,T=12,B=88;
function fmt(v){var a=Math.abs(v);if(a>=1000||v===Math.trunc(v))return v.toFixed(0);if(a>=100)return v.toFixed(1);return String(Math.round(v*100)/100)}
function esc(s){return String(s).replace(/[&<>"]/g,function(c){return{"&":"&amp;","<":"&lt;",">":"&gt;",'"':"&quot;"}[c]})}
function draw(fig,pts){var svg=$("svg",fig),span=range==="24h"?864e5:36e5,now=Date.now(),start=now-span,th=JSON.parse(fig.dataset.th||"[]"),lo=Infinity,hi=-Infinity;
pts=pts.map(function(p){return{t:Date.parse(p.ts),v:p.value}});
pts.forEach(function(p){lo=Math.min(lo,p.v);hi=Math.max(hi,p.v)});
if(!pts.length){svg.innerHTML='<text x="150" y="54" text-anchor="middle" class="ax">no data yet</text>';return}
th.forEach(function(t){var r=Math.max((hi-lo)/2,Math.abs(hi)*0.2);if(t.v>=lo-r&&t.v<=hi+r){lo=Math.min(lo,t.v);hi=Math.max(hi,t.v)}});
if(lo>=0&&hi<=1){lo=0;hi=1}var ms=Math.max(Math.abs(hi+lo)/2*0.02,1);if(hi-lo<ms){var mid=(hi+lo)/2;lo=mid-ms/2;hi=mid+ms/2}var pad=(hi-lo)*0.08;lo-=pad;hi+=pad;
function y(v){return B-(v-lo)/(hi-lo)*(B-T)}function x(t){return(t-start)/span*W}
var gap=Math.max(span/48,150e3),d="",prev=0,col=-1,n=0,sum=0,ct=0,mv=true;
function flush(m){if(!n)return;d+=(m||!d?"M":"L")+x(ct).toFixed(1)+" "+y(sum/n).toFixed(1);n=0;sum=0}
pts.forEach(function(p){if(p.t<start)return;var c=Math.floor(x(p.t)/2);if(prev&&p.t-prev>gap){flush(mv);mv=true}else if(c!==col){flush(mv);mv=false}if(!n)ct=p.t;col=c;n++;sum+=p.v;prev=p.t});flush(mv);
var h="";th.forEach(function(t){if(t.v<lo||t.v>hi)return;var yy=y(t.v).toFixed(1);h+='<line class="th '+esc(t.l)+'" x1="0" x2="300" y1="'+yy+'" y2="'+yy+'"/><text class="tl '+esc(t.l)+'" x="298" y="'+yy+'" dy="-2" text-anchor="end">'+esc(t.t)+"</text>"});
var lp=pts[pts.length-1];h+='<path class="ln" d="'+d+'"/>'+(lp.t>=start?'<circle class="dot" cx="'+x(lp.t).toFixed(1)+'" cy="'+y(lp.v).toFixed(1)+'" r="2.5"/>':"")+'<text class="ax" x="2" y="9">'+fmt(hi-pad)+'</text><text class="ax" x="2" y="98">'+fmt(lo+pad)+"</text>";svg.innerHTML=h;
var last=$(".last",fig);if(last&&pts.length){var u=$(".sub",fig);last.textContent=fmt(pts[pts.length-1].v)+(u&&u.textContent?" "+u.textContent:"")}}
function charts(){$$("figure.chart").forEach(function(f){fetch("/api/v1/history?device="+encodeURIComponent(f.dataset.device)+"&metric="+encodeURIComponent(f.dataset.metric)+"&since="+range,{cache:"no-store",credentials:"same-origin"}).then(function(r){if(!r.ok)throw new Error(r.status);return r.json()}).then(function(p){draw(f,p)}).catch(function(){})})}
$$(".range a").forEach(function(a){a.addEventListener("click",function(e){e.preventDefault();range=a.dataset.range;document.body.dataset.range=range;$$(".range a").forEach(function(b){b.classList.toggle("sel",b===a)});history.replaceState(null,"","?range="+range);charts()})});
/* A 24 h chart moves one point per ten minutes: no need to fetch it every minute. */
var tick=0;setInterval(function(){tick++;if(range!=="24h"||tick%5===0)charts()},60000);setInterval(ages,15000);
})();
